"""Train an SPA tagger with Accelerate on an AudioSet-format `datasets` build.

    accelerate launch recipes/train.py recipes/configs/demo.yaml [--spa_alpha 0 ...]
    python recipes/train.py --dataset agkphysics/AudioSet --dataset_config balanced --backbone ast ...

Arguments come from the dataclasses below: a YAML file first (its values become defaults), then the command
line. Checkpoints (`save_state`) go to OUTPUT_DIR/checkpoints/step_N every `checkpointing_steps` optimizer
steps and at every epoch end; `--resume_from_checkpoint latest` continues a killed run from the newest one.
The final model, feature extractor and model card go to OUTPUT_DIR/model.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_scheduler

from modeling_spa import SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.augmentation import AugmentationConfig
from modeling_spa.configuration_spa import check_spa_objective
from modeling_spa.data import AudioSetCollator, load_audioset, stand_in_rows
from modeling_spa.evaluation import evaluate
from modeling_spa.frontend import frontend_preset
from modeling_spa.hub.cards import dataset_id, render_model_card
from modeling_spa.hub.publish import HubPushError, push_to_hub
from modeling_spa.loaders import evaluation_loader, loader_options, on_device, own_generator
from modeling_spa.sampling import (
    BalancedSampler,
    balanced_weights,
    class_counts,
    expected_class_frequency,
    label_indices,
    unknown_label_counts,
)
from modeling_spa.splits import SplitSpec, resolve_splits, select, split_names
from modeling_spa.streaming import (
    Rows,
    StreamBatchSampler,
    StreamPosition,
    StreamReader,
    batches_per_epoch,
    open_part,
    part_labels,
    part_size,
    training_stream,
)
from modeling_spa.training.averaging import ExponentialMovingAverage
from modeling_spa.training.optimization import drop_gradients, freeze_groups, parameter_groups, set_prior_bias

BASELINES = {"wo_spa": (0.0, "obce"), "bce": (0.0, "bce")}  # --baseline: the paper's names -> (spa_alpha, loss)


@dataclass
class ModelArguments:
    backbone: str = field(default="passt", metadata={"help": "passt, ast, cnn14, htsat, psla or demo_cnn"})
    audio_config: str | None = field(default=None, metadata={"help": "JSON overrides of the backbone config"})
    pretrained_backbone: str | None = field(
        default=None, metadata={"help": "a checkpoint file, a release's short name (passt-s-swa-ap476) or a Hub id"}
    )
    frontend: str | None = field(default=None, metadata={"help": "log-mel preset (default: the backbone's)"})
    init_from: str | None = field(default=None, metadata={"help": "an SPA checkpoint to fine-tune"})
    projection_dim: int = 512
    text_encoder: str = "google-bert/bert-base-uncased"
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
    dataset: str = field(default="agkphysics/AudioSet", metadata={"help": "save_to_disk/parquet folder or Hub id"})
    dataset_config: str | None = None
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
    classes: str | None = field(default=None, metadata={"help": "JSON list of mids (default: the 527 labels)"})
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
    if data_args.unknown_labels not in ("error", "ignore"):
        raise ValueError(f"--unknown_labels must be 'error' or 'ignore', got {data_args.unknown_labels!r}")
    if args.freeze_backbone_steps and args.freeze_backbone_epochs:
        raise ValueError("Give --freeze_backbone_steps or --freeze_backbone_epochs, not both.")
    return model_args, data_args, augmentation, args


# -- model and data --------------------------------------------------------------------------------------------


def class_mids(data_args: DataArguments) -> list[str] | None:
    """The `classes` file: a JSON list of mids, or an object with a "mids" list (as the demo builder writes)."""
    if not data_args.classes:
        return None
    classes = json.loads(Path(data_args.classes).read_text())
    return classes["mids"] if isinstance(classes, dict) else classes


def build_model(model_args: ModelArguments, data_args: DataArguments, augmentation: AugmentationConfig):
    model = new_model(model_args, data_args)
    if model.config.frontend.get("max_frames") is None:  # any-length backbone: inference windows = training clips
        model.config.window_length_s = data_args.max_length_s
    # This run's augmentation, applied by the model in training mode and recorded in its config (None: none).
    model.config.augmentation = augmentation.to_dict() if augmentation != AugmentationConfig() else None
    # p_t at α = 0 and the backbone's original AudioSet head take no part in the loss: frozen, they are out of the
    # optimizer and DDP waits for no gradient.
    model.freeze_unused()
    return model


OBJECTIVE_FIELDS = ("spa_alpha", "classification_loss", "spa_objective", "spa_temperature", "spa_uniformity_weight",
                    "spa_geometry_weight", "freeze_text_projection")  # fmt: skip


def new_model(model_args: ModelArguments, data_args: DataArguments) -> SPAForAudioClassification:
    if model_args.init_from:
        model = SPAForAudioClassification.from_pretrained(model_args.init_from)
        if model.config.center_label_text != model_args.center_label_text:  # it changes p_t's parameters
            raise ValueError(f"{model_args.init_from} was built with center_label_text="
                             f"{model.config.center_label_text}: give the same --center_label_text.")  # fmt: skip
        for name in OBJECTIVE_FIELDS:
            setattr(model.config, name, getattr(model_args, name))
        check_spa_objective(model.config)
        return model
    return SPAForAudioClassification.from_backbone(
        backbone=model_args.backbone,
        audio_config=json.loads(model_args.audio_config) if model_args.audio_config else None,
        pretrained_backbone=model_args.pretrained_backbone,
        label_mids=class_mids(data_args),
        text_encoder=model_args.text_encoder,
        text_encoder_revision=model_args.text_encoder_revision,
        text_pooling=model_args.text_pooling,
        description_style=model_args.description_style,
        projection_dim=model_args.projection_dim,
        **({"frontend": frontend_preset(model_args.frontend)} if model_args.frontend else {}),
        **{name: getattr(model_args, name) for name in (*OBJECTIVE_FIELDS, "center_label_text")},
    )


def data_plan(data_args: DataArguments) -> dict[str, SplitSpec | None]:
    """The train, validation and test parts of the dataset (`modeling_spa.splits`: the default rule)."""
    available = split_names(data_args.dataset, data_args.dataset_config)
    return resolve_splits(available, data_args.train_split, data_args.eval_split, data_args.test_split,
                          data_args.validation_fraction, data_args.validation_seed, data_args.dataset)  # fmt: skip


def load_part(data_args: DataArguments, spec: SplitSpec):
    """A part of the plan as a map-style dataset (the hold-out is an index over the split's rows)."""
    return select(load_audioset(data_args.dataset, spec.source, data_args.dataset_config), spec)


def label_statistics(dataset, model, data_args: DataArguments) -> tuple[np.ndarray | None, np.ndarray]:
    """The balanced sampler's clip weights (None without it) and the class frequencies training draws: under balanced
    sampling, the expected share of drawn clips that carry each class, else the split's. `dataset`: a map-style
    dataset, or the (clip ids, label lists) of a stream."""
    # The labels column alone: no audio is decoded.
    if isinstance(dataset, tuple):
        ids, clip_labels = dataset
    else:
        ids = dataset["video_id"] if "video_id" in dataset.column_names else None
        clip_labels = dataset["labels"]
    labels = label_indices(
        clip_labels, model.config.label_mids, ids, ignore_unknown=data_args.unknown_labels == "ignore"
    )
    num_classes = model.config.num_labels
    if not data_args.balanced_sampling:
        return None, class_counts(labels, num_classes) / max(len(labels), 1)
    weights = balanced_weights(labels, num_classes, data_args.sampling_offset, reduce=data_args.sampling_reduce)
    return weights, expected_class_frequency(labels, weights, num_classes)


def collator_for(model, data_args: DataArguments, train: bool, seed: int) -> AudioSetCollator:
    return AudioSetCollator(
        sampling_rate=model.config.frontend["sampling_rate"],
        label_mids=model.config.label_mids,
        max_length_s=data_args.max_length_s,
        train=train,
        seed=seed,
        min_samples=model.spa.frontend.min_samples,
        ignore_unknown_labels=data_args.unknown_labels == "ignore",
    )


def make_loader(
    dataset,
    model,
    data_args,
    batch_size: int,
    train: bool,
    seed: int,
    sampler=None,
    drop_last: bool = False,
    options: dict | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,  # the balanced sampler draws from (seed, epoch) alone: resumable, and the same on every rank
        collate_fn=collator_for(model, data_args, train, seed),
        drop_last=drop_last,
        **(options or {"num_workers": 0}),
        # (Random crop offsets are not resumed exactly: the collator's generators are not checkpointed.)
        generator=own_generator(seed),
    )


def map_loaders(
    model, data_args: DataArguments, args, plan: dict, options: dict, new_classifier: bool, num_processes: int = 1
):
    """The training loader and the evaluation loaders (by split name) of downloaded splits.

    Under several processes an epoch is whole rounds of full batches (batch size x processes clips), so that
    Accelerate, which deals the batches out in turn, has nothing to even out: by default it completes a short last
    round from the start of the epoch's order, and those clips would be used twice. The balanced draw is rounded up
    (`BalancedSampler`); a uniform shuffle cannot grow without repeating clips, so its last incomplete round is
    dropped (fewer than batch x processes clips, others every epoch as the order changes). One process has nothing
    to even out: its epoch ends with a short batch, as given. Gradient accumulation needs no rounding: a window cut
    short by the epoch's end steps there (Accelerate's end of dataloader), and no clip is used twice.
    """
    train_split = load_part(data_args, plan["train"])
    if data_args.balanced_sampling or new_classifier:
        weights, frequency = label_statistics(train_split, model, data_args)
        if new_classifier:  # a resumed or fine-tuned model keeps its own
            set_prior_bias(model.classifier, frequency)
    several = num_processes > 1
    rounds = args.batch_size * num_processes if several else 1
    sampler = (BalancedSampler(weights, data_args.epoch_length, args.seed, multiple_of=rounds)
               if data_args.balanced_sampling else None)  # fmt: skip
    # A compiled step must also see one batch shape: drop the last, smaller batch of an epoch.
    drop_last = several or args.torch_compile
    clips = len(sampler if sampler is not None else train_split)
    if drop_last and clips < args.batch_size * num_processes:
        raise ValueError(f"{plan['train'].describe()}: an epoch of {clips} clips does not fill one batch of "
                         f"{args.batch_size} on each of {num_processes} process(es): lower --batch_size.")  # fmt: skip
    train_loader = make_loader(train_split, model, data_args, args.batch_size, True, args.seed, sampler,
                               drop_last=drop_last, options=options)  # fmt: skip
    eval_loaders = {
        spec.name: make_loader(
            load_part(data_args, spec), model, data_args, args.eval_batch_size, False, args.seed, options=options
        )  # fmt: skip
        for spec in (plan["eval"], plan["test"])
        if spec is not None
    }
    return train_loader, eval_loaders


def stream_record(data_args: DataArguments, args, accelerator: Accelerator, plan: dict, epoch_length: int) -> dict:
    """What a streamed run's order depends on: a resumed run must read the stream with the same values."""
    return {
        "dataset": data_args.dataset,
        "dataset_config": data_args.dataset_config,
        "train": plan["train"].describe(),
        "seed": args.seed,
        "shuffle_buffer": data_args.shuffle_buffer,
        "batch_size": args.batch_size,
        "num_processes": accelerator.num_processes,
        "epoch_length": epoch_length,
    }


def resumed_stream(saved: dict | None, current: dict, explicit_length: int | None) -> dict:
    """The stream record of a resumed run: the checkpoint's, after checking that nothing it depends on changed."""
    if saved is None:
        raise ValueError("--streaming: the checkpoint was written by a run that did not stream; resume it without.")
    current = {**current, "epoch_length": saved["epoch_length"] if explicit_length is None else explicit_length}
    changed = [key for key in current if saved.get(key) != current[key]]
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} then, {current[key]!r} now" for key in changed)
        raise ValueError(f"Cannot resume this streamed run: the stream would not be read the same way ({details}).")
    return saved


def stream_loaders(
    accelerator, model, data_args, args, plan: dict, options: dict, resumed: dict | None, new_classifier
):
    """The loaders of streamed splits (`modeling_spa.streaming`), each process reading its own share, prepared for the
    device only (Accelerate must not shard them again); and the stream's sampler and record, for checkpoints."""
    source, config = data_args.dataset, data_args.dataset_config
    epoch_length = data_args.epoch_length
    if new_classifier:  # one pass over the ids and labels (no audio) for the prior; it counts the clips too
        ids, labels = part_labels(source, plan["train"], config)
        set_prior_bias(model.classifier, label_statistics((ids, labels), model, data_args)[1])
        epoch_length = epoch_length or len(ids)
    if resumed is not None:
        current = stream_record(data_args, args, accelerator, plan, 0)
        record = resumed_stream(resumed.get("stream"), current, data_args.epoch_length)
    else:
        if epoch_length is None:
            accelerator.print(f"Sizing {plan['train'].describe()} (--epoch_length skips this)")
            epoch_length = part_size(source, plan["train"], config)
        record = stream_record(data_args, args, accelerator, plan, epoch_length) | {"batches": 0, "positions": None}
    per_epoch = batches_per_epoch(record["epoch_length"], args.batch_size, accelerator.num_processes)
    positions = record["positions"]
    position = StreamPosition(*positions[accelerator.process_index]) if positions else StreamPosition()
    stream = training_stream(open_part(source, plan["train"], config), args.seed, data_args.shuffle_buffer,
                             accelerator.process_index, accelerator.num_processes)  # fmt: skip
    in_epoch = resumed["batches_in_epoch"] if resumed is not None else 0
    sampler = StreamBatchSampler(
        StreamReader(stream, position), args.batch_size, per_epoch, record["batches"], in_epoch
    )
    train = DataLoader(Rows(per_epoch * args.batch_size), batch_sampler=sampler, generator=own_generator(args.seed),
                       collate_fn=collator_for(model, data_args, True, args.seed), **options)  # fmt: skip
    collator = collator_for(model, data_args, False, args.seed)
    evals = {}
    for spec in (plan["eval"], plan["test"]):
        if spec is not None:
            stream, size = open_part(source, spec, config), part_size(source, spec, config)
            batch = args.eval_batch_size
            evals[spec.name] = evaluation_loader(accelerator, stream, collator, batch, options, args.seed, size)
    return on_device(accelerator, train), evals, {"sampler": sampler, "record": record}


def describe_plan(plan: dict, data_args: DataArguments) -> str:
    """One line for the log and the model card: which clips each split of the run holds."""
    parts = [f"train on {plan['train'].describe()}", f"validate on {plan['eval'].describe()}"]
    parts.append(f"test on {plan['test'].describe()}" if plan["test"] is not None else "no test split")
    read = f"streamed (shuffle buffer {data_args.shuffle_buffer})" if data_args.streaming else "downloaded"
    config = f" ({data_args.dataset_config})" if data_args.dataset_config else ""
    return f"Data: {dataset_id(data_args.dataset)}{config}, {read}: {'; '.join(parts)}."  # a build by its name only


# -- checkpoints ------------------------------------------------------------------------------------------------


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    found = [
        p
        for p in (output_dir / "checkpoints").glob("step_*")
        if re.fullmatch(r"step_\d+", p.name) and (p / "trainer_state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    state: dict,
    keep: int,
    stream: StreamBatchSampler | None = None,
    epoch_sums: dict[str, float] | None = None,
) -> None:
    """save_state into a temporary folder, then rename: a run killed while saving keeps its last checkpoint.

    A streamed run also records, in trainer_state.json, each process's read position after the batches the state
    covers (`stream.positions`, in process order): a resumed run continues reading there. Mid-epoch, `epoch_sums`
    (`epoch_totals`) are the epoch's loss sums so far, from which a resumed run continues its epoch mean.
    """
    state["epoch_sums"] = epoch_sums
    if stream is not None:
        position = stream.position_after(state["stream"]["batches"])
        state["stream"]["positions"] = gather_object([[position.pass_index, position.rows]])
    final = output_dir / "checkpoints" / f"step_{state['completed_steps']}"
    partial = final.with_name(final.name + ".partial")
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process has written its RNG state before the folder is renamed
    if accelerator.is_main_process:
        (partial / "trainer_state.json").write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in checkpoint_dirs(output_dir)[: -max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint written by this script (no trainer_state.json).")
    return path


# -- publishing -------------------------------------------------------------------------------------------------


def save_final(
    model,
    extractor,
    arguments: tuple,
    results: dict,
    folder: str,
    weights: str,
    data: str = "",
    history: list | None = None,
) -> Path:
    """The model, its extractor, card, evaluation results and the run's arguments (`training_args.json`, as the
    Trainer saves its arguments beside a model) in OUTPUT_DIR/`folder`; `weights` says which weights these are,
    `data` which clips each split held, `history` the epoch summaries whose collapse diagnostics the card tabulates
    (those of the last weights)."""
    model_args, data_args, augmentation, args = arguments
    final = Path(args.output_dir) / folder
    model.save_pretrained(final, safe_serialization=True)
    extractor.save_pretrained(final)
    repo_id = args.hub_model_id or Path(args.output_dir).name
    training = training_summary(data_args, augmentation, args, weights) + (f" {data}" if data else "")
    card = render_model_card(
        model.config, repo_id, results, dataset=data_args.dataset, training=training, history=history
    )
    (final / "README.md").write_text(card, encoding="utf-8")
    (final / "eval_results.json").write_text(json.dumps(results, indent=2))
    names = ("model", "data", "augmentation", "train")
    recorded = {name: asdict(values) for name, values in zip(names, arguments, strict=True)}
    (final / "training_args.json").write_text(json.dumps(recorded, indent=2))
    return final


def training_summary(data_args: DataArguments, augmentation: AugmentationConfig, args: TrainArguments, weights: str):
    """The card's Training section: the recipe in a few sentences."""
    sampling = (
        f"class-balanced sampling with replacement (clip weight: {data_args.sampling_reduce} of 1 / (label count + "
        f"{data_args.sampling_offset:g}), {data_args.epoch_length or 'split-size'} clips per epoch)"
        if data_args.balanced_sampling
        else f"streamed, shuffled through a buffer of {data_args.shuffle_buffer} clips"
        if data_args.streaming
        else "uniform shuffling"
    )
    backbone_lr = args.backbone_learning_rate if args.backbone_learning_rate is not None else args.learning_rate
    freeze = args.freeze_backbone_steps or args.freeze_backbone_epochs
    unit = "steps" if args.freeze_backbone_steps else "epochs"
    return (
        f"{args.num_epochs} epochs, batch {args.batch_size} x {args.gradient_accumulation_steps} accumulation, "
        f"{sampling}, clips cropped to {data_args.max_length_s:g} s. Augmentation: {augmentation.describe()}. "
        f"AdamW: heads lr {args.learning_rate:g}, backbone lr {backbone_lr:g}"
        + (f" with layer-wise decay {args.layer_decay:g}" if args.layer_decay else "")
        + f", weight decay {args.weight_decay:g} (none on norms, biases, position embeddings and tokens), "
        f"{args.lr_scheduler} schedule with {args.warmup_ratio:.0%} warm-up"
        + (f", backbone frozen for the first {freeze:g} {unit}" if freeze else "")
        + f"; mixed precision {args.mixed_precision}, seed {args.seed}. Weights: {weights}."
    )


# -- training ---------------------------------------------------------------------------------------------------


LOSS_PARTS = ("loss", "bce_loss", "obce_loss", "spa_loss", "spa_uniformity_loss", "spa_geometry_loss")
MAX_NON_FINITE_STEPS = 3  # in a row: then the data or the learning rate is broken, and the run stops


class NonFiniteLossError(RuntimeError):
    """Training kept producing non-finite gradients; the weights are those of the last finite step."""


def check_step(accelerator, model, grad_norm: torch.Tensor, clip_ids: list[str], state: dict) -> bool:
    """Whether the optimizer may step: False, reported with the step's clip ids, when the gradients are not finite.

    Gradients are all-reduced before this point, so every process sees the same norm and takes the same decision
    (no extra collective). One host read per optimizer step: the price of never stepping on NaN. The forward pass
    may already have written NaN into BatchNorm statistics; then no later step can recover, and the run stops.
    """
    if torch.isfinite(grad_norm):
        state["non_finite_in_a_row"] = 0
        return True
    state["non_finite_in_a_row"] = state.get("non_finite_in_a_row", 0) + 1
    step = state["completed_steps"] + 1
    print(f"[process {accelerator.process_index}] skipped optimizer step {step}: non-finite gradients "
          f"(norm {grad_norm.item()}); clips in the step: {', '.join(clip_ids)}", flush=True)  # fmt: skip
    poisoned = [name for name, b in model.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    if poisoned or state["non_finite_in_a_row"] >= MAX_NON_FINITE_STEPS:
        cause = (
            f"the forward pass wrote non-finite values into the buffers {poisoned[:3]}"
            if poisoned
            else f"{MAX_NON_FINITE_STEPS} optimizer steps in a row had non-finite gradients"
        )
        raise NonFiniteLossError(
            f"Training stopped at step {step}: {cause} (clips of the last step: {', '.join(clip_ids)}). Check those "
            "clips (e.g. extreme sample values) and the learning rate; the weights were not updated by the skipped "
            "steps, and the last checkpoint holds the state before them."
        )
    return False


def train_epoch(accelerator, model, optimizer, scheduler, loader, state: dict, args, progress, extras: dict):
    """One epoch from `state` (resumable mid-epoch); returns the mean loss parts over the epoch's batches on all
    processes (those before a resume included), skipped clips and steps.

    Nothing is read back from the device but the gradient norm, once per optimizer step (`check_step`), and the
    loss sums at logging steps and checkpoints (`epoch_totals`): loss sums stay on the device, and bad clips are
    replaced in the batch rather than selected out (`stand_in_rows`), so the batch shape never changes. A step whose
    gradients are not finite is skipped and its losses are left out of the means. `extras`: the backbone's
    parameters and its frozen steps (their gradients are dropped then, see `freeze_groups`), and the weight average
    to update after each step.
    """
    epoch = state["epoch"]
    # A stream's batch sampler starts after the batches done by itself, without reading them again.
    loader = epoch_loader(accelerator, loader, epoch, 0 if extras["stream"] is not None else state["batches_in_epoch"])
    sums, batches = resumed_sums(accelerator, state)
    skipped, skipped_steps, window_ids = [], 0, []
    for batch in loader:
        state["batches_in_epoch"] += 1
        if "stream" in state:
            state["stream"]["batches"] += 1
        skipped += batch["skipped"]
        window_ids += batch["clip_ids"]
        any_valid = batch["valid"].any()
        rows = stand_in_rows(batch["valid"])
        with accelerator.accumulate(model):
            output = model(batch["input_values"][rows], batch["attention_mask"][rows], labels=batch["labels"][rows])
            # A batch of only bad clips still steps, with zero loss: every process must run the same collectives.
            accelerator.backward(output.loss * any_valid)
            if accelerator.sync_gradients:
                if state["completed_steps"] < extras["frozen_steps"]:
                    drop_gradients(extras["backbone_params"])
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                if check_step(accelerator, model, grad_norm, window_ids, state):
                    optimizer.step()
                    if extras["ema"] is not None:
                        extras["ema"].update(extras["unwrapped"])
                else:
                    skipped_steps += 1
                window_ids = []
            scheduler.step()
            optimizer.zero_grad()
        finite = torch.isfinite(output.loss.detach()) & any_valid.to(output.loss.device)
        for name in LOSS_PARTS:
            if getattr(output, name) is not None:
                part = torch.where(finite, getattr(output, name).detach(), 0.0)
                sums[name] = sums.get(name, 0.0) + part
        batches = batches + finite
        if not accelerator.sync_gradients:
            continue
        state["completed_steps"] += 1
        progress.update(1)
        if state["completed_steps"] % args.logging_steps == 0:
            means = epoch_means(epoch_totals(accelerator, sums, batches))
            progress.set_postfix(epoch=epoch, loss=f"{means['loss']:.4f}")
            accelerator.log({f"train/{k}": v for k, v in means.items()} | learning_rates(optimizer, "lr/"),
                            step=state["completed_steps"])  # fmt: skip
        if state["completed_steps"] % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, Path(args.output_dir), state, args.keep_checkpoints, extras["stream"],
                            epoch_totals(accelerator, sums, batches))  # fmt: skip
        if state["completed_steps"] >= (args.max_steps or float("inf")):
            break
    return epoch_means(epoch_totals(accelerator, sums, batches)), skipped, skipped_steps


def epoch_loader(accelerator, loader, epoch: int, batches_done: int = 0):
    """The prepared training loader set to `epoch`; resumed mid-epoch (`batches_done` > 0), the interrupted run's
    order minus the batches it did."""
    # The samplers' order depends on (seed, epoch) only. Set on the prepared loader first: under DDP, a skipping
    # loader's set_epoch does not reach the sampler (Accelerate's BatchSamplerShard hides it), which it shares.
    loader.set_epoch(epoch)
    if batches_done:
        loader = accelerator.skip_first_batches(loader, batches_done)
        loader.set_epoch(epoch)  # its own iteration count, which it sets its sampler to (single process)
    return loader


def epoch_totals(accelerator, sums: dict[str, torch.Tensor], batches) -> dict[str, float]:
    """The loss sums of the epoch so far and the batches they cover (`batches`), over all processes: a collective,
    which every process reaches at the same step. One read from the device."""
    names = list(sums)
    device = accelerator.device
    values = torch.stack([sums[name].float() for name in names] + [torch.as_tensor(batches, device=device).float()])
    return dict(zip([*names, "batches"], accelerator.reduce(values, reduction="sum").tolist(), strict=True))


def epoch_means(totals: dict[str, float]) -> dict[str, float]:
    """Each loss part's mean over the epoch's batches so far (`epoch_totals`)."""
    return {name: value / max(totals["batches"], 1) for name, value in totals.items() if name != "batches"}


def resumed_sums(accelerator, state: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor | int]:
    """The loss sums and batch count an epoch starts from: none at its start; resumed mid-epoch, the totals of the
    interrupted run's batches (its checkpoint's `epoch_totals`), so that the epoch's mean covers all its batches. The
    first process carries them, the others start at zero with the same parts (the totals add up over processes)."""
    totals = state.get("epoch_sums") if state["batches_in_epoch"] else None
    if not totals:
        return {}, 0
    share = 1.0 if accelerator.is_main_process else 0.0
    sums = {name: torch.tensor(value * share, device=accelerator.device) for name, value in totals.items()}
    return sums, sums.pop("batches")


# Epoch summary prefixes -> tracker namespaces. The epoch means of the training losses get their own namespace: the
# step log's `train/<loss>` are running means within the epoch, and one tag must not mix the two at one step.
TRACKER_NAMESPACES = (("eval_ema_", "eval_ema/"), ("eval_", "eval/"), ("train_", "train_epoch/"))


def tracker_scalars(summary: dict, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """An epoch summary (a `history.json` entry) as the flat, numeric values trackers take: `eval_map` -> `eval/map`,
    `eval_ema_omap` -> `eval_ema/omap`, `train_loss` -> `train_epoch/loss`, `seconds` -> `epoch/seconds`, nested
    dicts flattened with "/" (`lr: {heads: ...}` -> `lr/heads`: TensorBoard would draw a dict as a group of runs and
    trackio would store it as an object). `step` is the trackers' x axis, not a value (trackio renames a `step` key);
    lists and other non-numbers are left out; so are the top-level keys in `skip`."""
    flat = {}
    for key, value in summary.items():
        if key in skip or key == "step":
            continue
        name = next((new + key[len(old) :] for old, new in TRACKER_NAMESPACES if key.startswith(old)), key)
        name = "epoch/seconds" if key == "seconds" else name
        if isinstance(value, dict):
            flat |= {f"{name}/{k}": v for k, v in tracker_scalars(value).items()}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def learning_rates(optimizer, prefix: str = "") -> dict[str, float]:
    """The current learning rate of each parameter group, by the group's name."""
    return {f"{prefix}{group['name']}": group["lr"] for group in optimizer.param_groups}


def default_mixed_precision(args: TrainArguments) -> str | None:
    """--mixed_precision if given; else a launcher's choice other than "no"; else bf16 on a GPU that has it, or no.

    `accelerate launch` always passes a value (its default is "no"), so its "no" cannot be told from no choice:
    to train in float32 on a GPU, pass `--mixed_precision no` to this script.
    """
    if args.mixed_precision is not None:
        return args.mixed_precision
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no":
        return None  # Accelerator reads the launcher's
    gpu = torch.cuda.is_available() and not args.cpu and torch.cuda.is_bf16_supported()
    return "bf16" if gpu else "no"


def make_accelerator(args: TrainArguments) -> Accelerator:
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=default_mixed_precision(args),
        # Compiled after DDP wrapping, in `prepare`; None leaves the choice to `accelerate launch --dynamo_backend`.
        dynamo_backend="inductor" if args.torch_compile else None,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to.split(","),
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


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


def shut_down(accelerator: Accelerator) -> None:
    """End training and tear the process group down explicitly, in an order that cannot deadlock.

    DDP's C++ Reducer holds the process group. Where it is the group's last owner, the group's destructor runs when
    Python frees the Reducer, with the GIL held, and joins gloo's worker threads, while a worker may need the GIL to
    free a tensor of the last collective: a rank that never exits after "Saved the model" (pytorch issue 56297). So
    every reference to the wrapped model goes first (the group, still registered, stays alive), and the group is
    destroyed last, through its own binding, which releases the GIL while it joins.
    """
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()  # trackers, then destroy_process_group()


def run_training(accelerator: Accelerator, model_args, data_args, augmentation, args) -> dict:
    """The whole run: train, evaluate every epoch, test, save. Returns the final metrics per split."""
    output_dir = Path(args.output_dir)
    resume = resolve_resume(output_dir, args.resume_from_checkpoint)
    set_seed(args.seed)
    model = build_model(model_args, data_args, augmentation)
    if args.gradient_checkpointing:  # transformers 5's name for it; non-reentrant: the variant that works under DDP
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    extractor = SPAFeatureExtractor(
        sampling_rate=model.config.frontend["sampling_rate"], max_length_s=data_args.max_length_s
    )
    plan = data_plan(data_args)
    resumed_state = json.loads((resume / "trainer_state.json").read_text()) if resume is not None else None
    new_classifier = args.prior_bias and not model_args.init_from and resume is None
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
    distances = model.label_distances.cpu().numpy()

    backbone_lr = args.backbone_learning_rate if args.backbone_learning_rate is not None else args.learning_rate
    groups = parameter_groups(
        model, model.spa.backbone, args.learning_rate, backbone_lr, args.weight_decay, args.layer_decay
    )
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    ema = ExponentialMovingAverage(model, args.ema_decay, args.ema_warmup) if args.ema_decay else None
    if ema is not None:
        ema.module.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if stream is None:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    else:  # the stream's loader is prepared already: each process reads its own share
        model, optimizer = accelerator.prepare(model, optimizer)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)  # per process, once sharded
    total_steps = args.max_steps or args.num_epochs * steps_per_epoch
    frozen_steps = args.freeze_backbone_steps or math.ceil(args.freeze_backbone_epochs * steps_per_epoch)
    # A prepared scheduler steps once per process for every optimizer step (accelerate's convention).
    scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(freeze_groups(scheduler, frozen_steps * accelerator.num_processes))
    if stream is None:
        eval_loaders = {split: accelerator.prepare(loader) for split, loader in eval_loaders.items()}
    # Augmentation draws from torch's global generator: a stream of its own on each process. Only now: a seedable
    # shuffling sampler takes the global seed when it is prepared, and must shuffle alike on every process.
    set_seed(args.seed, device_specific=True)
    if args.report_to != "none":
        config = {**asdict(model_args), **asdict(data_args), **asdict(augmentation), **asdict(args)}
        accelerator.init_trackers(output_dir.name, config=config)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    backbone_params = [p for p in unwrapped.spa.backbone.parameters() if p.requires_grad]
    extras = {"frozen_steps": frozen_steps, "backbone_params": backbone_params, "ema": ema, "unwrapped": unwrapped,
              "stream": stream and stream["sampler"]}  # fmt: skip
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

    progress = tqdm(total=total_steps, initial=state["completed_steps"], disable=not accelerator.is_local_main_process)
    model.train()
    last_eval = {}  # each final's eval-split metrics at the current weights, once an epoch has ended in this run
    while state["epoch"] < math.ceil(total_steps / steps_per_epoch) and state["completed_steps"] < total_steps:
        started = time.perf_counter()
        losses, skipped, skipped_steps = train_epoch(
            accelerator, model, optimizer, scheduler, train_loader, state, args, progress, extras
        )
        last_eval = {
            name: evaluate(accelerator, weights, eval_loaders[plan["eval"].name], distances)
            for name, weights in finals.items()
        }
        summary = {
            "epoch": state["epoch"],
            "step": state["completed_steps"],
            "seconds": round(time.perf_counter() - started, 1),
            **{f"train_{name}": value for name, value in losses.items()},
            "train_skipped_clips": len({clip for clip, _ in gather_object(skipped)}),
            "train_skipped_steps": skipped_steps,  # equal on every process: the gradients are all-reduced
            **{f"eval_{k}": v for k, v in last_eval["model"].items() if k != "omap_per_lambda"},
            **{f"eval_ema_{k}": last_eval["model_ema"][k] for k in ("map", "omap") if "model_ema" in last_eval},
        }
        summary["lr"] = learning_rates(optimizer)  # each parameter group's, at the epoch's last step
        # The step log recorded the rates of this step already when it fell on a logging step: no duplicate point.
        logged_rates = state["completed_steps"] % args.logging_steps == 0
        accelerator.log(tracker_scalars(summary, skip=("lr",) if logged_rates else ()), step=state["completed_steps"])
        state["history"].append(summary | {"eval_omap_per_lambda": last_eval["model"]["omap_per_lambda"]})
        accelerator.print(json.dumps(summary))
        if skipped:
            named = ", ".join(f"{clip} ({reason})" for clip, reason in skipped[:10])
            print(f"[process {accelerator.process_index}] skipped {len(skipped)} bad clip(s): {named}", flush=True)
        state["epoch"], state["batches_in_epoch"] = state["epoch"] + 1, 0
        save_checkpoint(accelerator, output_dir, state, args.keep_checkpoints, extras["stream"])
    progress.close()
    if stream is not None:
        stream["sampler"].reader.close()

    arguments, results = (model_args, data_args, augmentation, args), {}
    for folder, weights in finals.items():
        # The last epoch already scored the eval split at the final weights; only the other splits are new work.
        results[folder] = {
            split: last_eval[folder] if split == plan["eval"].name and folder in last_eval else
            evaluate(accelerator, weights, loader, distances)
            for split, loader in eval_loaders.items()
        }  # fmt: skip
        if accelerator.is_main_process:
            which = "the last" if folder == "model" else f"an exponential moving average (decay {args.ema_decay:g})"
            which += " of the training weights"
            history = state["history"] if folder == "model" else None
            final = save_final(
                weights, extractor, arguments, results[folder], folder, which, describe_plan(plan, data_args), history
            )
            scores = {s: {k: round(r[k], 4) for k in ("map", "omap")} for s, r in results[folder].items()}
            accelerator.print(f"Saved the model to {final}: {json.dumps(scores)}")
    if accelerator.is_main_process:
        (output_dir / "history.json").write_text(json.dumps(state["history"], indent=2))
    accelerator.wait_for_everyone()
    return results["model"]


if __name__ == "__main__":
    try:
        main()
    except (HubPushError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
