"""The end of a run: the model folder (weights, extractor, card, results, the run's arguments)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..augmentation import AugmentationConfig
from ..feature_extraction_spa import SPAFeatureExtractor
from ..files import write_json
from ..hub.cards import render_model_card


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


def training_summary(data_args, augmentation: AugmentationConfig, args, weights: str):
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


def save_finals(accelerator, finals: dict, eval_loaders: dict, eval_split: str, evaluated: dict, distances, arguments,
                data_description: str, history: list) -> dict:  # fmt: skip
    """Score every split with each of the final weights (`finals`: folder name -> module; the eval split's scores of
    the last epoch, `evaluated`, are reused) and save each into OUTPUT_DIR/<folder> with `save_final`; `history.json`
    beside them. Returns {folder: {split: metrics}}."""
    from ..evaluation import evaluate

    model_args, data_args, augmentation, args = arguments
    results = {}
    for folder, weights in finals.items():
        results[folder] = {
            split: evaluated[folder] if split == eval_split and folder in evaluated else
            evaluate(accelerator, weights, loader, distances)
            for split, loader in eval_loaders.items()
        }  # fmt: skip
        if accelerator.is_main_process:
            which = "the last" if folder == "model" else f"an exponential moving average (decay {args.ema_decay:g})"
            extractor = SPAFeatureExtractor(
                sampling_rate=weights.config.frontend["sampling_rate"], max_length_s=data_args.max_length_s
            )
            final = save_final(weights, extractor, arguments, results[folder], folder,
                               which + " of the training weights", data_description,
                               history if folder == "model" else None)  # fmt: skip
            scores = {s: {k: round(r[k], 4) for k in ("accuracy", "map", "omap") if r.get(k) is not None}
                      for s, r in results[folder].items()}  # fmt: skip
            accelerator.print(f"Saved the model to {final}: {json.dumps(scores)}")
    if accelerator.is_main_process:
        write_json(Path(args.output_dir) / "history.json", history)
    accelerator.wait_for_everyone()
    return results
