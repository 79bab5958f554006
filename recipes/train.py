"""Train an SPA tagger with Accelerate on an AudioSet-format `datasets` build or on a user's own data.

    accelerate launch recipes/train.py recipes/configs/demo.yaml [--spa_alpha 0 ...]
    python recipes/train.py --dataset agkphysics/AudioSet --dataset_config balanced --backbone ast ...
    python recipes/train.py --dataset my_sounds/labels.csv --taxonomy my_taxonomy.json --init_from CHECKPOINT ...
    python recipes/train.py --dataset audiofolder --data_dir my_sounds/ ...   (docs/fine-tune.md)

Arguments come from the dataclasses below: a YAML file first (its values become defaults), then the command
line. Checkpoints (`save_state`) go to OUTPUT_DIR/checkpoints/step_N every `checkpointing_steps` optimizer
steps and at every epoch end; `--resume_from_checkpoint latest` continues a killed run from the newest one.
The final model, feature extractor and model card go to OUTPUT_DIR/model.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from modeling_spa.augmentation import AugmentationConfig
from modeling_spa.data.loaders import loader_options
from modeling_spa.data.sampling import (
    unknown_label_counts,
)
from modeling_spa.evaluation import evaluate, model_distances
from modeling_spa.hub.publish import HubPushError, push_to_hub
from modeling_spa.training.accelerator import make_accelerator, shut_down
from modeling_spa.training.averaging import ExponentialMovingAverage
from modeling_spa.training.checkpointing import resolve_resume, save_checkpoint
from modeling_spa.training.guard import NonFiniteLossError
from modeling_spa.training.inputs import data_plan, describe_plan, load_part, map_loaders, stream_loaders
from modeling_spa.training.loop import epoch_summary, report_epoch, train_epoch
from modeling_spa.training.model_setup import build_model
from modeling_spa.training.optimization import make_optimizer, make_scheduler
from modeling_spa.training.saving import save_finals

BASELINES = {"wo_spa": (0.0, "obce"), "bce": (0.0, "bce")}  # --baseline: the paper's names -> (spa_alpha, loss)


@dataclass
class ModelArguments:
    backbone: str = field(
        default="passt",
        metadata={"help": "passt, ast, cnn14, htsat, psla, demo_cnn or hub (transformers' speech encoders)"},
    )
    audio_config: str | None = field(
        default=None,
        metadata={"help": "JSON overrides of the backbone config (of the checkpoint's with --pretrained_backbone), "
                  'e.g. \'{"use_weighted_layer_sum": true, "spa_pooling": "attention"}\' for --backbone hub'},
    )  # fmt: skip
    pretrained_backbone: str | None = field(
        default=None,
        metadata={"help": "a checkpoint file, a release's short name (passt-s-swa-ap476) or a Hub id (--backbone "
                  "hub: any wav2vec2, HuBERT, WavLM, Whisper, ... checkpoint, e.g. microsoft/wavlm-base-plus)"},
    )  # fmt: skip
    freeze_feature_encoder: bool = field(
        default=False,
        metadata={"help": "--backbone hub: keep the CNN feature encoder of wav2vec2-style models frozen, as "
                  "transformers' audio-classification example does"},
    )  # fmt: skip
    frontend: str | None = field(default=None, metadata={"help": "log-mel preset (default: the backbone's)"})
    init_from: str | None = field(
        default=None,
        metadata={"help": "an SPA checkpoint to fine-tune; re-headed (with SPA kept) when the run's classes differ"},
    )
    projection_dim: int = 512
    text_encoder: str | None = field(
        default=None,
        metadata={"help": "the frozen text encoder (default: google-bert/bert-base-uncased; with --init_from, the "
                  "checkpoint's own, which this may point to a local copy of)"},
    )  # fmt: skip
    text_encoder_revision: str | None = None
    text_pooling: str = "mean"
    description_style: str = "concat"
    spa_alpha: float = 0.3
    classification_loss: str = field(default="obce", metadata={"help": "obce: (BCE + OBCE)/2, or bce"})
    # The label-space options of SPAConfig (its docstring says what each does and why it prevents the collapse).
    spa_objective: str = field(default="paper", metadata={"help": "paper (Eq. 4) or contrastive"})
    spa_temperature: float = field(default=0.1, metadata={"help": "τ of the contrastive objective"})
    spa_uniformity_weight: float = field(default=0.0, metadata={"help": "weight of the labels' uniformity term"})
    spa_geometry_weight: float = field(
        default=1.0, metadata={"help": "weight of the label-geometry term (0: the paper's exact Eq. 4)"}
    )
    freeze_text_projection: bool = field(default=False, metadata={"help": "keep p_t at its initialisation"})
    center_label_text: bool = field(default=False, metadata={"help": "centre T̂ over the labels; p_t without bias"})
    baseline: str | None = field(
        default=None,
        metadata={"help": "wo_spa: the paper's 'w/o SPA' (α = 0, (BCE + OBCE)/2); bce: α = 0 with plain BCE. "
                  "Overrides --spa_alpha and --classification_loss."},
    )  # fmt: skip


@dataclass
class DataArguments:
    dataset: str = field(
        default="agkphysics/AudioSet",
        metadata={"help": "an AudioSet-format build (save_to_disk/parquet folder or Hub id); a CSV of audio files and "
                  "labels; 'audiofolder' with --data_dir; or any audio dataset with --label_column"},
    )  # fmt: skip
    dataset_config: str | None = None
    data_dir: str | None = field(default=None, metadata={"help": "the folder of --dataset audiofolder"})
    audio_dir: str | None = field(default=None, metadata={"help": "a CSV's audio files' folder (default: the CSV's)"})
    label_column: str | None = field(
        default=None, metadata={"help": "the label column (ClassLabel, a sequence of them, strings); default: labels, "
                                "label, category or class"}
    )  # fmt: skip
    taxonomy: str | None = field(
        default=None,
        metadata={"help": "the classes' hierarchy: a JSON/CSV taxonomy file, or 'audioset' (default for "
                  "AudioSet-format builds; a user's dataset without one is a flat label list)"},
    )  # fmt: skip
    problem_type: str = field(
        default="auto",
        metadata={"help": "auto (single-label when every clip has one label), single_label_classification or "
                  "multi_label_classification"},
    )  # fmt: skip
    fold_column: str | None = field(default=None, metadata={"help": "cross-validation: the column of the folds"})
    test_fold: str | None = field(
        default=None, metadata={"help": "with --fold_column: the fold tested on (the others train and validate)"}
    )
    train_split: str = "train"
    eval_split: str | None = field(
        default=None,
        metadata={"help": "validation split (default: 'validation' if the dataset has one, else a hold-out of train)"},
    )
    test_split: str | None = field(default=None, metadata={"help": "test split (default: 'test' if any; '': none)"})
    validation_fraction: float = field(
        default=0.05, metadata={"help": "without a validation split: the share of train held out for validation"}
    )
    validation_seed: int = field(default=0, metadata={"help": "seed of the hold-out's clip-id hash"})
    classes: str | None = field(
        default=None,
        metadata={"help": "the classes, ids or names: a JSON list or a text file, one per line (default: the 527 "
                  "AudioSet labels; a user's dataset: its ClassLabel names, else the labels it uses)"},
    )  # fmt: skip
    unknown_labels: str = field(
        default="error",
        metadata={"help": "a clip label outside the model's classes: error (naming it), or ignore (left out, counted)"},
    )
    max_length_s: float = 10.0
    num_workers: int | None = field(
        default=None, metadata={"help": "DataLoader workers per process (default: from the cores, at most 8)"}
    )
    streaming: bool = field(default=False, metadata={"help": "stream the splits instead of loading them whole"})
    shuffle_buffer: int = field(default=1000, metadata={"help": "streaming: clips in the shuffle buffer"})
    balanced_sampling: bool = field(
        default=False, metadata={"help": "draw clips with replacement, weighted by their labels' rarity (PaSST)"}
    )
    sampling_offset: float = field(default=100.0, metadata={"help": "clip weight: sum of 1 / (label count + offset)"})
    sampling_reduce: str = field(default="sum", metadata={"help": "sum or max of the label weights of a clip"})
    epoch_length: int | None = field(
        default=None, metadata={"help": "clips per epoch (balanced sampling, streaming; default: the split's size)"}
    )


@dataclass
class TrainArguments:
    output_dir: str = "outputs/spa"
    seed: int = 42
    num_epochs: int = 5
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = field(default=1.0e-3, metadata={"help": "the new heads' (p_a, c_a, p_t)"})
    backbone_learning_rate: float | None = field(
        default=None, metadata={"help": "the backbone's (default: --learning_rate); pretrained: ~1e-5 to 5e-5"}
    )
    layer_decay: float | None = field(
        default=None, metadata={"help": "layer-wise lr decay of transformer backbones: lr · decay^(L + 1 - depth)"}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW's; never on norms, biases, embeddings"})
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    freeze_backbone_steps: int = field(default=0, metadata={"help": "train the heads alone for N optimizer steps"})
    freeze_backbone_epochs: float = field(default=0.0, metadata={"help": "... or for N epochs"})
    prior_bias: bool = field(
        default=True, metadata={"help": "a new classifier's bias = the log-odds of the class frequencies"}
    )
    ema_decay: float | None = field(
        default=None, metadata={"help": "keep an EMA of the weights (e.g. 0.999): evaluated, saved to model_ema"}
    )
    ema_warmup: bool = field(default=True, metadata={"help": "EMA decay min(d, (1 + n) / (10 + n)) at update n"})
    max_grad_norm: float = 5.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (default: bf16 on a GPU)"})
    gradient_checkpointing: bool = False
    torch_compile: bool = field(default=False, metadata={"help": "compile the model (inductor)"})
    cpu: bool = field(default=False, metadata={"help": "train on CPU even where a GPU is present"})
    checkpointing_steps: int = 100
    logging_steps: int = 10
    keep_checkpoints: int = 2
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint dir or 'latest'"})
    report_to: str = field(
        default="none", metadata={"help": "none, all, or trackers separated by commas: tensorboard,trackio, ..."}
    )
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False


ARGUMENTS = (ModelArguments, DataArguments, AugmentationConfig, TrainArguments)


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, AugmentationConfig, TrainArguments]:
    """The argument dataclasses; the augmentation arguments are `AugmentationConfig`, recorded in the model config."""
    parser = HfArgumentParser(ARGUMENTS)
    if argv and argv[0].endswith((".yaml", ".yml")):
        values = yaml.safe_load(Path(argv[0]).read_text()) or {}
        known = {f.name for cls in ARGUMENTS for f in fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"{argv[0]}: unknown keys {unknown}; see `python recipes/train.py --help`.")
        parser.set_defaults(**values)
        argv = argv[1:]
    model_args, data_args, augmentation, args = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    if model_args.baseline:
        if model_args.baseline not in BASELINES:
            raise ValueError(f"--baseline must be one of {sorted(BASELINES)}, got {model_args.baseline!r}")
        model_args.spa_alpha, model_args.classification_loss = BASELINES[model_args.baseline]
    if data_args.epoch_length is not None and not (data_args.balanced_sampling or data_args.streaming):
        raise ValueError(
            "--epoch_length sets how many clips the balanced sampler draws or a stream gives an epoch: add "
            "--balanced_sampling or --streaming."
        )
    if data_args.balanced_sampling and data_args.streaming:
        raise ValueError(
            "--balanced_sampling draws clips by index from the whole split, which a stream does not have: train on "
            "the downloaded split (without --streaming), or stream with uniform shuffling (without "
            "--balanced_sampling)."
        )
    if (data_args.fold_column is None) != (data_args.test_fold is None):
        raise ValueError("Cross-validation needs --fold_column and --test_fold (recipes/cross_validate.py runs every "
                         "fold).")  # fmt: skip
    if data_args.unknown_labels not in ("error", "ignore"):
        raise ValueError(f"--unknown_labels must be 'error' or 'ignore', got {data_args.unknown_labels!r}")
    if args.freeze_backbone_steps and args.freeze_backbone_epochs:
        raise ValueError("Give --freeze_backbone_steps or --freeze_backbone_epochs, not both.")
    return model_args, data_args, augmentation, args


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, augmentation, args = parse_arguments(sys.argv[1:] if argv is None else argv)
    accelerator = make_accelerator(args)
    args.mixed_precision = accelerator.mixed_precision  # as resolved, for the model card
    try:
        results = run_training(accelerator, model_args, data_args, augmentation, args)
    except BaseException as err:
        # The traceback keeps the failed run's frames, and with them the DDP model, alive: free them (all but
        # this frame, which is still executing) so that shut_down can release the model first.
        traceback.clear_frames(err.__traceback__.tb_next)
        raise
    finally:
        shut_down(accelerator)
    if args.push_to_hub and accelerator.is_main_process:  # the last weights; model_ema stays local
        final = Path(args.output_dir) / "model"
        accelerator.print(f"Pushed: {push_to_hub(final, args.hub_model_id or final.parent.name, args.hub_private)}")
    return results


def run_training(accelerator: Accelerator, model_args, data_args, augmentation, args) -> dict:
    """The whole run: model, data, optimizer, then per epoch train, validate and checkpoint; then test and save.
    Returns the final metrics per split of the last weights."""
    output_dir = Path(args.output_dir)
    resume = resolve_resume(output_dir, args.resume_from_checkpoint)
    resumed_state = json.loads((resume / "trainer_state.json").read_text()) if resume is not None else None
    set_seed(args.seed)

    # The model: a new one around a backbone, or a checkpoint to fine-tune; this run's objective and augmentation.
    model = build_model(model_args, data_args, augmentation)
    if args.gradient_checkpointing:  # transformers 5's name for it; non-reentrant: the variant that works under DDP
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    # The data: train / validation / test parts, downloaded or streamed; a new classifier starts at the class prior.
    plan = data_plan(data_args)
    fresh_head = not model_args.init_from or getattr(model, "reheaded", False)
    new_classifier = args.prior_bias and fresh_head and resume is None
    options = loader_options(data_args.num_workers, accelerator.device)
    if data_args.streaming:
        train_loader, eval_loaders, stream = stream_loaders(accelerator, model, data_args, args, plan, options,
                                                            resumed_state, new_classifier)  # fmt: skip
    else:
        train_loader, eval_loaders = map_loaders(model, data_args, args, plan, options, new_classifier,
                                                 accelerator.num_processes)  # fmt: skip
        stream = None
    accelerator.print(describe_plan(plan, data_args))
    if data_args.unknown_labels == "ignore" and not data_args.streaming:  # a stream is not read twice to count them
        ignored = unknown_label_counts(load_part(data_args, plan["train"])["labels"], model.config.label_mids)
        accelerator.print(f"Labels outside the model's classes, left out (mid: training clips): {ignored}")
    distances = model_distances(model)  # None: a flat label list, without OmAP

    # The optimizer, the weight average and the schedule, prepared for the processes.
    optimizer = make_optimizer(model, args)
    ema = ExponentialMovingAverage(model, args.ema_decay, args.ema_warmup) if args.ema_decay else None
    if ema is not None:
        ema.module.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if stream is None:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
        eval_loaders = {split: accelerator.prepare(loader) for split, loader in eval_loaders.items()}
    else:  # the stream's loaders are prepared already: each process reads its own share
        model, optimizer = accelerator.prepare(model, optimizer)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)  # per process, once sharded
    total_steps = args.max_steps or args.num_epochs * steps_per_epoch
    frozen_steps = args.freeze_backbone_steps or math.ceil(args.freeze_backbone_epochs * steps_per_epoch)
    scheduler = accelerator.prepare(
        make_scheduler(optimizer, args, total_steps, frozen_steps, accelerator.num_processes)
    )
    # Augmentation draws from torch's global generator: a stream of its own on each process. Only now: a seedable
    # shuffling sampler takes the global seed when it is prepared, and must shuffle alike on every process.
    set_seed(args.seed, device_specific=True)
    if args.report_to != "none":
        config = {**asdict(model_args), **asdict(data_args), **asdict(augmentation), **asdict(args)}
        accelerator.init_trackers(output_dir.name, config=config)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    extras = {"frozen_steps": frozen_steps, "ema": ema, "unwrapped": unwrapped, "stream": stream and stream["sampler"],
              "backbone_params": [p for p in unwrapped.spa.backbone.parameters() if p.requires_grad]}  # fmt: skip
    # The weights evaluated and saved: the last ones, and their average if one is kept.
    finals = {"model": unwrapped} | ({"model_ema": ema.module} if ema is not None else {})

    # Resuming skips batches, not optimizer steps: the two differ under gradient accumulation.
    state = {"epoch": 0, "batches_in_epoch": 0, "completed_steps": 0, "history": []}
    if resume is not None:
        accelerator.load_state(str(resume))  # model, optimizer, scheduler, RNG states, and the EMA
        state = resumed_state
        accelerator.print(f"Resumed from {resume}: epoch {state['epoch']}, step {state['completed_steps']}")
    if stream is not None:
        state["stream"] = stream["record"]  # what the stream was read with, and (at checkpoints) where each process is

    # The loop: an epoch, its validation, its summary, a checkpoint.
    progress = tqdm(total=total_steps, initial=state["completed_steps"], disable=not accelerator.is_local_main_process)
    model.train()
    evaluated = {}  # each final's eval-split metrics at the current weights, once an epoch has ended in this run
    while state["epoch"] < math.ceil(total_steps / steps_per_epoch) and state["completed_steps"] < total_steps:
        started = time.perf_counter()
        losses, skipped, skipped_steps = train_epoch(
            accelerator, model, optimizer, scheduler, train_loader, state, args, progress, extras
        )
        evaluated = {name: evaluate(accelerator, weights, eval_loaders[plan["eval"].name], distances)
                     for name, weights in finals.items()}  # fmt: skip
        summary = epoch_summary(state, time.perf_counter() - started, losses, skipped, skipped_steps, evaluated,
                                optimizer)  # fmt: skip
        report_epoch(accelerator, summary, state, args.logging_steps, skipped)
        state["history"].append(summary | {"eval_omap_per_lambda": evaluated["model"]["omap_per_lambda"]})
        state["epoch"], state["batches_in_epoch"] = state["epoch"] + 1, 0
        save_checkpoint(accelerator, output_dir, state, args.keep_checkpoints, extras["stream"])
    progress.close()
    if stream is not None:
        stream["sampler"].reader.close()

    # Test and save: every split scored by each of the final weights, each saved with its card.
    results = save_finals(accelerator, finals, eval_loaders, plan["eval"].name, evaluated, distances,
                          (model_args, data_args, augmentation, args), describe_plan(plan, data_args),
                          state["history"])  # fmt: skip
    return results["model"]


if __name__ == "__main__":
    try:
        main()
    except (HubPushError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
