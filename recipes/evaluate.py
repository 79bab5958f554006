"""Evaluate any SPA checkpoint (a folder or a Hub id) on any split: mAP, OmAP, OmAP_λ, per-class AP (and accuracy for a
single-label model).

    python recipes/evaluate.py --model outputs/spa/model --dataset agkphysics/AudioSet --dataset_config balanced \
        [--split test] [--output_dir DIR] [--audioset_head] [--save_scores] [--streaming] [--batch_size 16]
    python recipes/evaluate.py --model outputs/mine/model --dataset my_sounds/labels.csv --split train
    python recipes/evaluate.py --model outputs/mine/model --dataset audiofolder --data_dir my_sounds/ --split test
    accelerate launch --multi_gpu recipes/evaluate.py ...      # the same numbers, computed over several processes

Data: an AudioSet-format build, or a user's own (`modeling_spa.data.sources`): a CSV of audio files and labels, an
audiofolder, or any audio dataset with `--label_column`. Its labels are matched to the model's classes by id or name
(`--taxonomy` maps names to ids where the data's names are not the model's); `--fold_column/--test_fold` make that
fold the "test" split, as recipes/train.py does.

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

Decision thresholds: results.json also holds micro/macro F1 at a fixed 0.5 and, where the checkpoint has calibrated
per-class thresholds (`config.thresholds`), at those. `--calibrate` chooses per-class thresholds on this split (each
class's F1 maximised; classes with fewer than --min_positives positive clips keep --fallback_threshold) and writes
thresholds.json; `--write_thresholds` also stores them in the checkpoint folder (config.json and the card's "Decision
thresholds" section), for `spa-tag --threshold auto`. Calibrate on validation, then evaluate the test split:

    python recipes/evaluate.py --model DIR --dataset D --split validation --calibrate --write_thresholds
    python recipes/evaluate.py --model DIR --dataset D --split test      # F1 at the calibrated thresholds vs 0.5

Writes to OUTPUT_DIR (default: outputs/eval/<model name>-<split>): results.json (map, omap, omap_per_lambda, n_clips,
skipped clips, f1, ...), per_class.csv (index, mid, name, ap, positives), thresholds.json (with --calibrate), and with
--save_scores scores.npy (clips x classes, float32), labels.npy (uint8) and clip_ids.json, rows in the same order.
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
from modeling_spa.data.sources import OwnData, is_own_data, open_own_data
from modeling_spa.data.splits import HELD_OUT, VALIDATION, SplitSpec, select, split_names
from modeling_spa.data.streaming import open_part, part_size
from modeling_spa.evaluation import check_audioset_head, score_split, split_metrics
from modeling_spa.files import write_json
from modeling_spa.hub.cards import HUB_AUDIOSET_NOTE, dataset_id, results_note
from modeling_spa.tagging.hierarchy import LabelHierarchy
from modeling_spa.tagging.thresholds import (
    DEFAULT_THRESHOLD,
    MIN_POSITIVES,
    calibrate_thresholds,
    f1_report,
    store_thresholds,
)
from modeling_spa.taxonomy import Taxonomy
from modeling_spa.windowing import AGGREGATIONS, window_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an SPA checkpoint: a folder or a Hub id")
    parser.add_argument("--revision", help="the Hub revision of --model")
    parser.add_argument("--dataset", required=True, help="a build or Hub id; a CSV of files and labels; audiofolder")
    parser.add_argument("--dataset_config")
    parser.add_argument("--data_dir", help="the folder of --dataset audiofolder")
    parser.add_argument("--audio_dir", help="a CSV's audio files' folder (default: the CSV's)")
    parser.add_argument("--label_column", help="a user's dataset's label column (default: labels, label, ...)")
    parser.add_argument("--taxonomy", help="a taxonomy file mapping the data's label names to the model's class ids")
    parser.add_argument("--fold_column", help="cross-validation: the fold column; with --test_fold")
    parser.add_argument("--test_fold", help="the fold that is the 'test' split")
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
    parser.add_argument("--calibrate", action="store_true", help="choose per-class thresholds on this split (max F1)")
    parser.add_argument("--min_positives", type=int, default=MIN_POSITIVES, help="fewer positives: the fallback")
    parser.add_argument("--fallback_threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--write_thresholds", action="store_true", help="with --calibrate: store them in --model")
    parser.add_argument("--f1_levels", type=int, nargs="+", default=[], metavar="DEPTH",
                        help="also F1 of coarse tags at these ontology depths (0: Animal, Music, ...); needs the "
                        "ontology files")  # fmt: skip
    args = parser.parse_args(argv)
    if args.write_thresholds and not args.calibrate:
        parser.error("--write_thresholds needs --calibrate")
    if args.write_thresholds and args.audioset_head:
        parser.error("--write_thresholds stores thresholds for the SPA head; --audioset_head scores another head")
    if args.write_thresholds and not Path(args.model).is_dir():
        parser.error(f"--write_thresholds writes into a local checkpoint folder; {args.model} is not one")
    return args


def own_data(args: argparse.Namespace, model) -> OwnData | None:
    """A user's dataset (`modeling_spa.data.sources`), its labels matched to the model's classes; None for a build."""
    if not is_own_data(args.dataset, args.label_column, args.taxonomy):
        return None
    if args.streaming:
        raise ValueError("--streaming reads AudioSet-format builds; a user's dataset is read whole.")
    ids = list(model.config.label_mids or model.config.label_names)
    taxonomy = args.taxonomy or Taxonomy.flat(model.config.label_names, "the model's classes", ids=ids)
    return open_own_data(args.dataset, args.dataset_config, args.data_dir, args.label_column, taxonomy, ids,
                         model.config.problem_type, args.fold_column, args.test_fold, args.audio_dir)  # fmt: skip


def split_spec(args: argparse.Namespace, own: OwnData | None = None) -> SplitSpec:
    """The split asked for; "validation" of a dataset without one: train.py's hold-out of train."""
    available = list(own.splits) if own is not None else split_names(args.dataset, args.dataset_config)
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


def label_distances(model: SPAForAudioClassification) -> np.ndarray | None:
    """The checkpoint's distance buffer (None for a flat label list: no OmAP); a model whose buffer was never built
    (re-headed with `num_labels`) needs its mids and the ontology."""
    if not model.config.has_hierarchy:
        return None
    distances = model.label_distances.detach().cpu().numpy()
    if distances.any():
        return distances
    if not model.config.label_mids:
        raise ValueError("The checkpoint has no label distances and no label mids: OmAP cannot weigh its mistakes.")
    from modeling_spa.taxonomy import AudioSetOntology

    print("The checkpoint's label_distances were never built: computing them from the ontology for its label mids.")
    return AudioSetOntology.load().distances_for(model.config.label_mids)


def make_loader(args, accelerator: Accelerator, model, spec: SplitSpec, own: OwnData | None = None):
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
    rows = own.splits[spec.source] if own is not None else load_audioset(args.dataset, spec.source, args.dataset_config)
    return evaluation_loader(accelerator, select(rows, spec), collator, args.batch_size, options)


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
    summary["f1"] = decision_f1(model, split.scores, split.labels, args.audioset_head)
    if args.f1_levels:
        summary["f1_levels"] = level_f1(model, split, args.f1_levels)
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


def decision_f1(model, scores: np.ndarray, labels: np.ndarray, audioset_head: bool = False, thresholds=None) -> dict:
    """Micro/macro F1 (and micro precision, recall) at a fixed 0.5 and at the checkpoint's calibrated thresholds."""

    def summary(values) -> dict:
        report = f1_report(scores, labels, values)
        report.pop("per_class_f1")
        return report

    f1 = {"fixed_0.5": summary(DEFAULT_THRESHOLD)}
    if model.config.thresholds is not None and not audioset_head:  # they belong to the SPA head
        f1["calibrated"] = summary(np.asarray(model.config.thresholds) if thresholds is None else thresholds)
    return f1


def level_f1(model, split, levels: list[int]) -> dict:
    """`decision_f1` of coarse tags: at each ontology depth, a node's score is its best class's, its label whether
    any of its classes is a label, its threshold its classes' lowest (`modeling_spa.tagging.hierarchy`)."""
    hierarchy = LabelHierarchy.for_model(model.config)
    scores, labels = hierarchy.node_scores(split.scores), hierarchy.node_scores(split.labels)
    calibrated = model.config.thresholds
    out = {}
    for level in levels:
        nodes = hierarchy.level_nodes(level)
        limits = hierarchy.node_thresholds(calibrated)[nodes] if calibrated is not None else None
        f1 = decision_f1(model, scores[:, nodes], labels[:, nodes], thresholds=limits)
        out[f"level_{level}"] = {"tags": [hierarchy.node_names[n] for n in nodes], **f1}
    return out


def calibrate(args, model, spec: SplitSpec, split, out: Path) -> dict:
    """Per-class thresholds chosen on this split: thresholds.json, and with --write_thresholds the checkpoint."""
    calibration = calibrate_thresholds(split.scores, split.labels, args.min_positives, args.fallback_threshold)
    in_sample = {"fixed_0.5": DEFAULT_THRESHOLD, "calibrated (in-sample)": calibration.thresholds}
    f1 = {name: f1_report(split.scores, split.labels, t) for name, t in in_sample.items()}
    for report in f1.values():
        report.pop("per_class_f1")
    record = calibration.record(dataset=dataset_id(args.dataset), split=spec.name, n_clips=int(len(split.scores)),
                                f1=f1, f1_split=f"{spec.name}, the calibration split itself")  # fmt: skip
    names = model.config.label_names
    write_json(out / "thresholds.json", {**record, "thresholds": dict(zip(names, calibration.thresholds.tolist(),
                                                                          strict=True))})  # fmt: skip
    if args.write_thresholds:
        store_thresholds(args.model, calibration.thresholds, record)
        print(f"Stored {len(names)} thresholds in {args.model} (config.json, README.md)")
    return record


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    model = load_model(args).to(accelerator.device)
    own = own_data(args, model)
    spec = split_spec(args, own)
    distances = label_distances(model)
    loader = make_loader(args, accelerator, model, spec, own)
    split = score_split(accelerator, model, loader, audioset_head=args.audioset_head, with_ids=args.save_scores)
    metrics = split_metrics(split, distances, model)  # with the SPA head: the label-space diagnostics too
    out = Path(args.output_dir or f"outputs/eval/{Path(args.model).name}-{spec.name}")
    summary = None
    if accelerator.is_main_process:
        summary = write_outputs(out, args, model, spec, split, metrics)
        if args.calibrate:
            summary["calibration"] = calibrate(args, model, spec, split, out)
            write_json(out / "results.json", summary)
        shown = [k for k in ("accuracy", "map", "omap", "n_clips") if k in summary]
        accelerator.print(json.dumps({k: summary[k] for k in shown} | {"skipped": summary["skipped"]["count"]}))
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
