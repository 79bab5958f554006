"""Evaluate any SPA checkpoint (a folder or a Hub id) on any split: mAP, OmAP, OmAP_λ, per-class AP.

    python recipes/evaluate.py --model outputs/spa/model --dataset agkphysics/AudioSet --dataset_config balanced \
        [--split test] [--output_dir DIR] [--audioset_head] [--save_scores] [--streaming] [--batch_size 16]
    accelerate launch --multi_gpu recipes/evaluate.py ...      # the same numbers, computed over several processes

The model scores whole clips in eval mode with its own windows (clips longer than `config.window_length_s` window by
window, aggregated by `config.window_aggregation`; `--window_hop_s` / `--window_aggregation` override the config).
`--audioset_head` scores with the backbone's original AudioSet head (`model.audioset_scores`: a converted public
checkpoint as it is, the paper's third baseline); the model's classes must then be AudioSet's 527 labels in
`class_labels_indices.csv` order. The label distances are the checkpoint's `label_distances` buffer: no ontology file
is needed (a re-headed model without distances falls back to the ontology for its label mids).

Splits: any split of the dataset; "validation" of a dataset without one is the hold-out of train that
`recipes/train.py` validates on (`--validation_fraction`, `--validation_seed`, the same defaults). Bad clips are
skipped, counted and named; a label outside the model's classes is an error naming the clip, or with
`--unknown_labels ignore` left out of the clip's labels and counted per mid in the results.

Writes to OUTPUT_DIR (default: outputs/eval/<model name>-<split>): results.json (map, omap, omap_per_lambda, n_clips,
skipped clips, ...), per_class.csv (index, mid, name, ap, positives), and with --save_scores scores.npy
(clips x classes, float32), labels.npy (uint8) and clip_ids.json, rows in the same order.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from modeling_spa import SPAForAudioClassification
from modeling_spa.data import AudioSetCollator, load_audioset
from modeling_spa.data.loaders import evaluation_loader, loader_options
from modeling_spa.data.splits import HELD_OUT, VALIDATION, SplitSpec, select, split_names
from modeling_spa.data.streaming import open_part, part_size
from modeling_spa.evaluation import check_audioset_head, score_split, split_metrics
from modeling_spa.hub.cards import HUB_AUDIOSET_NOTE, dataset_id, results_note
from modeling_spa.windowing import AGGREGATIONS, window_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an SPA checkpoint: a folder or a Hub id")
    parser.add_argument("--revision", help="the Hub revision of --model")
    parser.add_argument("--dataset", required=True, help="save_to_disk/parquet folder or Hub id (AudioSet columns)")
    parser.add_argument("--dataset_config")
    parser.add_argument("--split", default="test")
    parser.add_argument("--validation_fraction", type=float, default=0.05, help="the hold-out, as train.py's")
    parser.add_argument("--validation_seed", type=int, default=0)
    parser.add_argument("--streaming", action="store_true", help="stream the split instead of downloading it")
    parser.add_argument("--output_dir")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, help="DataLoader workers per process (default: from the cores)")
    parser.add_argument("--audioset_head", action="store_true", help="score with the original AudioSet head")
    parser.add_argument("--window_hop_s", type=float, help="override the model's window hop")
    parser.add_argument("--window_aggregation", choices=AGGREGATIONS, help="override the model's aggregation")
    parser.add_argument("--unknown_labels", choices=("error", "ignore"), default="error")
    parser.add_argument("--save_scores", action="store_true", help="also write scores.npy, labels.npy, clip_ids.json")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--cpu", action="store_true", help="evaluate on CPU even where a GPU is present")
    return parser.parse_args(argv)


def split_spec(args: argparse.Namespace) -> SplitSpec:
    """The split asked for; "validation" of a dataset without one: train.py's hold-out of train."""
    available = split_names(args.dataset, args.dataset_config)
    if args.split in available:
        return SplitSpec(args.split, args.split)
    if args.split == VALIDATION and "train" in available:
        return SplitSpec(VALIDATION, "train", HELD_OUT, args.validation_fraction, args.validation_seed)
    raise ValueError(f"{args.dataset} has no split {args.split!r}; its splits: {available}.")


def load_model(args: argparse.Namespace) -> SPAForAudioClassification:
    model = SPAForAudioClassification.from_pretrained(args.model, revision=args.revision)
    if args.window_hop_s is not None:
        model.config.window_hop_s = args.window_hop_s
    if args.window_aggregation is not None:
        model.config.window_aggregation = args.window_aggregation
    window_settings(model.config)  # a bad override is an error now, not after the first batch
    if args.audioset_head:
        check_audioset_head(model)
    return model.eval()


def label_distances(model: SPAForAudioClassification) -> np.ndarray:
    """The checkpoint's distance buffer; a model whose buffer was never built (re-headed) needs its mids and the
    ontology."""
    distances = model.label_distances.detach().cpu().numpy()
    if distances.any():
        return distances
    if not model.config.label_mids:
        raise ValueError("The checkpoint has no label distances and no label mids: OmAP cannot weigh its mistakes.")
    from modeling_spa.taxonomy import AudioSetOntology

    print("The checkpoint's label_distances were never built: computing them from the ontology for its label mids.")
    return AudioSetOntology.load().distances_for(model.config.label_mids)


def make_loader(args, accelerator: Accelerator, model, spec: SplitSpec):
    rate = model.config.frontend["sampling_rate"]
    collator = AudioSetCollator(
        sampling_rate=rate,
        label_mids=model.config.label_mids,
        # Clips are padded to at least one window: a shorter clip is scored as one window, masked, as the model does.
        max_length_s=window_settings(model.config).length / rate,
        min_samples=model.spa.frontend.min_samples,
        ignore_unknown_labels=args.unknown_labels == "ignore",
    )
    options = loader_options(args.num_workers, accelerator.device)
    if args.streaming:
        size = part_size(args.dataset, spec, args.dataset_config)
        stream = open_part(args.dataset, spec, args.dataset_config)
        return evaluation_loader(accelerator, stream, collator, args.batch_size, options, size=size)
    data = select(load_audioset(args.dataset, spec.source, args.dataset_config), spec)
    return evaluation_loader(accelerator, data, collator, args.batch_size, options)


def per_class_rows(model, labels: np.ndarray, ap: np.ndarray) -> list[list]:
    """index, mid, name, AP (empty for a class without positives), positives."""
    mids = list(model.config.label_mids or [""] * len(ap))
    names = list(model.config.label_names or [""] * len(ap))
    positives = labels.sum(axis=0).astype(int)
    return [
        [i, mids[i], names[i], "" if np.isnan(ap[i]) else f"{ap[i]:.6f}", int(positives[i])] for i in range(len(ap))
    ]


def write_outputs(out: Path, args, model, spec: SplitSpec, split, metrics: dict) -> dict:
    result = metrics.pop("_result")
    unknown: dict[str, int] = {}
    for _, mid in split.unknown_labels:
        unknown[mid] = unknown.get(mid, 0) + 1
    summary = {
        "model": args.model,
        "dataset": dataset_id(args.dataset),
        "dataset_config": args.dataset_config,
        "split": spec.name,
        "split_clips": spec.describe(),
        "head": "audioset" if args.audioset_head else "spa",
        **{k: v for k, v in metrics.items() if k != "skipped_clips"},
        "n_clips": int(len(split.scores)),
        "n_classes_without_positives": int(result["n_classes_without_positives"]),
        "skipped": {"count": len(split.skipped), "clips": [list(pair) for pair in split.skipped]},
        "unknown_labels": {"ignored": args.unknown_labels == "ignore", "clips_per_mid": unknown},
        "windows": {
            "length_s": window_settings(model.config).length / model.config.frontend["sampling_rate"],
            "hop_s": model.config.window_hop_s,
            "aggregation": model.config.window_aggregation,
        },  # fmt: skip
    }
    if results_note(args.dataset):
        summary["note"] = HUB_AUDIOSET_NOTE
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    with open(out / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "mid", "name", "ap", "positives"])
        writer.writerows(per_class_rows(model, split.labels, result["ap_per_class"]))
    if args.save_scores:
        np.save(out / "scores.npy", split.scores.astype(np.float32))
        np.save(out / "labels.npy", split.labels.astype(np.uint8))
        (out / "clip_ids.json").write_text(json.dumps(split.clip_ids))
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    spec = split_spec(args)
    model = load_model(args).to(accelerator.device)
    distances = label_distances(model)
    loader = make_loader(args, accelerator, model, spec)
    split = score_split(accelerator, model, loader, audioset_head=args.audioset_head, with_ids=args.save_scores)
    metrics = split_metrics(split, distances, model)  # with the SPA head: the label-space diagnostics too
    out = Path(args.output_dir or f"outputs/eval/{Path(args.model).name}-{spec.name}")
    summary = None
    if accelerator.is_main_process:
        summary = write_outputs(out, args, model, spec, split, metrics)
        accelerator.print(json.dumps({k: summary[k] for k in ("map", "omap", "n_clips")} | {
            "skipped": summary["skipped"]["count"]}))  # fmt: skip
        if split.skipped:
            named = ", ".join(f"{clip} ({reason})" for clip, reason in split.skipped[:10])
            accelerator.print(f"Skipped {len(split.skipped)} bad clip(s): {named}")
        if summary.get("note"):
            accelerator.print(f"Note: {summary['note']}")
        accelerator.print(f"Wrote {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
