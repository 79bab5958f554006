"""Resample a user's dataset once into an AudioSet-format parquet build (decoding in every epoch costs more).

    python recipes/build_own_data.py --dataset my_sounds/labels.csv [--taxonomy my_taxonomy.csv] --rate 16000 \
        --output outputs/my_sounds_build [--workers 2]
    python recipes/build_own_data.py --dataset audiofolder --data_dir my_sounds/ ...

Reads a folder of files with a CSV, or an audiofolder (`modeling_spa.data.sources`), matches the labels to the taxonomy
(by id or name; unknown ones in one error), decodes every file, mixes it to mono, resamples it once to `--rate` (soxr)
and stores 16-bit FLAC in parquet shards (`modeling_spa.builds.shards`: resumable, byte-identical), with `labels` as
the classes' ids, `human_labels` their names and the CSV's other columns (fold, ...) as strings; `classes.json` lists
the classes. Train on it with `recipes/train.py --dataset OUTPUT --taxonomy TAXONOMY` (or `--label_column labels` for
a flat label list), with the same `--fold_column` as before.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from modeling_spa.builds.folders import own_data_plan
from modeling_spa.builds.shards import build_shards, encode_clip, report_summary
from modeling_spa.data.sources import open_own_data
from modeling_spa.files import write_json


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a CSV of files and labels, or audiofolder")
    parser.add_argument("--data_dir", help="the folder of --dataset audiofolder")
    parser.add_argument("--audio_dir", help="a CSV's audio files' folder (default: the CSV's)")
    parser.add_argument("--label_column")
    parser.add_argument("--taxonomy", help="a taxonomy file (default: the labels are a flat list)")
    parser.add_argument("--rate", type=int, required=True, help="the model's sampling rate")
    parser.add_argument("--output", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clips-per-shard", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    own = open_own_data(args.dataset, data_dir=args.data_dir, label_column=args.label_column, taxonomy=args.taxonomy,
                        audio_dir=args.audio_dir)  # fmt: skip
    plan = own_data_plan(own)
    extra = sorted({name for tasks in plan.values() for task in tasks for name, _ in task.extra})
    settings = {"rate": args.rate, "source": own.origin}
    result = build_shards(args.output, plan, functools.partial(encode_clip, rate=args.rate), settings, extra,
                          args.clips_per_shard, args.workers, description="clips")  # fmt: skip
    names = [own.taxonomy.name(node) for node in own.classes]
    write_json(Path(args.output) / "classes.json", {"mids": own.classes, "names": names,
                                                   "taxonomy": own.taxonomy.record()})  # fmt: skip
    print(report_summary(result.report))
    return result.report


if __name__ == "__main__":
    main()
