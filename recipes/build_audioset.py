"""Build AudioSet in the Hub's parquet format from the official segment CSVs and a folder of downloaded clips.

    python recipes/build_audioset.py --csv-dir CSVS --clips CLIPS --output OUT [--config balanced] [--rate 32000]
        [--workers N] [--clips-per-shard 1000] [--push-to-hub ORG/NAME [--private]]

One build is one config of the Hub copy `agkphysics/AudioSet`, with its split names:
    balanced    train = balanced_train_segments.csv                              test = eval_segments.csv
    unbalanced  train = unbalanced_train_segments.csv                            test = eval_segments.csv
    full        train = balanced_train_segments.csv + unbalanced_train_segments.csv, test = eval_segments.csv
`load_audioset(OUT, "train")` and `datasets.load_dataset(OUT)` read it; train on it with
`recipes/train.py --dataset OUT --eval_split test --test_split ''`.

Every clip is decoded (any format soundfile reads), mixed to mono, resampled once to `--rate` (soxr) and stored as
16-bit FLAC, in shards of `--clips-per-shard` segments in CSV order. A killed build continues where it stopped when
run again with the same arguments (`modeling_spa.builds.shards`); the same inputs give byte-identical shards whatever
the number of workers. Missing and unreadable clips are counted, listed with their reasons in `build_report.json` and
printed. How clip files are named and matched: `modeling_spa.builds.audioset`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from modeling_spa.builds.audioset import CONFIG_FILES, ClipIndex, Segment, SegmentsError, config_segments
from modeling_spa.builds.shards import (
    REPORT_FILE,
    ClipTask,
    build_shards,
    encode_clip,
    file_stamp,
    push_build,
    render_dataset_card,
    report_summary,
)
from modeling_spa.taxonomy import AudioSetOntology

CLASSES_FILE = "classes.json"


def plan_split(segments: Sequence[Segment], index: ClipIndex, names: dict[str, str]) -> tuple[list, list, list]:
    """The split's clip tasks in CSV order; segments listed twice (kept once) and clips with several files."""
    tasks, duplicates, ambiguous, seen = [], [], [], {}
    for segment in segments:
        key = (segment.ytid, segment.start)
        if key in seen:
            duplicates.append({"video_id": segment.ytid, "line": segment.where, "first": seen[key]})
            continue
        seen[key] = segment.where
        files = index.find(segment)
        if len(files) > 1:
            ambiguous.append({"video_id": segment.ytid, "used": files[0], "ignored": files[1:]})
        labels = tuple(names[mid] for mid in segment.labels)
        file = files[0] if files else ""
        tasks.append(ClipTask(segment.ytid, segment.labels, labels, file, file_stamp(file) if file else ""))
    return tasks, duplicates, ambiguous


def card_details(config: str, rate: int) -> str:
    files = "; ".join(f"{split}: {' + '.join(names)}" for split, names in CONFIG_FILES[config].items())
    return (
        f"Built by the SPA project's `recipes/build_audioset.py` from the official AudioSet segment CSVs "
        f"(config `{config}`: {files}) and locally downloaded clips, each decoded, mixed to mono, resampled once to "
        f"{rate} Hz (soxr) and stored as 16-bit FLAC. Clips whose videos could not be downloaded are missing, as in "
        f"every AudioSet copy. `{CLASSES_FILE}` lists the 527 label mids and names in the order of "
        "`class_labels_indices.csv`."
    )


LICENCE = (
    "The labels (AudioSet, Gemmeke et al. 2017) are © Google, CC BY 4.0; the ontology names, CC BY-SA 4.0. The audio "
    "comes from YouTube videos, whose rights stay with their uploaders: do not redistribute it without checking."
)


def build_audioset(
    csv_dir: str | Path,
    clips_dir: str | Path,
    output: str | Path,
    config: str = "balanced",
    rate: int = 32000,
    workers: int = 1,
    clips_per_shard: int = 1000,
    progress: bool = True,
    ontology: AudioSetOntology | None = None,
):
    """Build (or finish) `output`; the `BuildResult` (its report also holds duplicates and ambiguous matches)."""
    ontology = ontology or AudioSetOntology.load()
    names = dict(zip(ontology.label_mids, ontology.label_names, strict=True))
    segments = config_segments(csv_dir, config, names)
    index = ClipIndex.scan(clips_dir)
    plan, duplicates, ambiguous = {}, [], []
    for split, split_segments in segments.items():
        plan[split], split_duplicates, split_ambiguous = plan_split(split_segments, index, names)
        duplicates += split_duplicates
        ambiguous += split_ambiguous
    result = build_shards(
        output,
        plan,
        functools.partial(encode_clip, rate=rate),
        settings={"rate": rate, "builder": "audioset"},
        clips_per_shard=clips_per_shard,
        workers=workers,
        progress=progress,
    )
    output = Path(output)
    result.report.update(config=config, sampling_rate=rate, duplicates=duplicates, ambiguous=ambiguous)
    (output / REPORT_FILE).write_text(json.dumps(result.report, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    listing = {"mids": list(ontology.label_mids), "names": list(ontology.label_names), "config": config, "rate": rate}
    (output / CLASSES_FILE).write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")
    card = render_dataset_card(
        f"AudioSet ({config}, {rate // 1000} kHz FLAC)",
        f"AudioSet's `{config}` segments in the Hub's AudioSet parquet layout, audio at {rate} Hz mono.",
        result.report,
        "cc-by-4.0",
        LICENCE,
        details=card_details(config, rate),
    )
    (output / "README.md").write_text(card, encoding="utf-8")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv-dir", required=True, type=Path, help="folder with the official segment CSVs")
    parser.add_argument("--clips", required=True, type=Path, help="folder of downloaded clips (searched recursively)")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--config", choices=sorted(CONFIG_FILES), default="balanced")
    parser.add_argument("--rate", type=int, default=32000, help="sampling rate of the stored FLAC (the model's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clips-per-shard", type=int, default=1000)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the build as a dataset repo when done")
    parser.add_argument("--private", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result = build_audioset(
        args.csv_dir, args.clips, args.output, args.config, args.rate, args.workers, args.clips_per_shard,
        progress=not args.no_progress,
    )  # fmt: skip
    print(report_summary(result.report))
    if result.report["duplicates"] or result.report["ambiguous"]:
        print(f"{len(result.report['duplicates'])} duplicate segment(s), {len(result.report['ambiguous'])} clip(s) "
              f"with several files: see {args.output / REPORT_FILE}")  # fmt: skip
    print(f"{len(result.written)} shard(s) written, {len(result.kept)} kept from an earlier run, "
          f"in {time.perf_counter() - started:.1f} s: {args.output}")  # fmt: skip
    if args.push_to_hub:
        print(push_build(args.output, args.push_to_hub, private=args.private))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (SegmentsError, FileNotFoundError) as err:  # bad or missing CSVs: the message names file and line
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
