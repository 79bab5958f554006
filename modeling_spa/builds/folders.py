"""Audio-folder datasets in the common layout (ESC-50's, UrbanSound8K's): a folder of audio files and a CSV naming
each file with its label and its cross-validation fold. What `modeling_spa.data.sources` reads back (`--dataset
labels.csv`).

Here from an AudioSet-format build (`write_folder_dataset`): each clip's labels become one class of the user's own by
a rule (`assign_class`), classes with too few clips are left out, and clips are dealt into folds stratified by class
(`stratified_folds`). The audio bytes are written as they are (no re-encoding).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..files import write_json

CSV_NAME = "labels.csv"
AUDIO_DIR = "audio"


def assign_class(labels: Sequence[str], rules: Sequence[tuple[str, set[str]]]) -> str | None:
    """The first class (rules in priority order: class -> the source labels it takes) that takes any of `labels`;
    None when no rule does."""
    return next((name for name, takes in rules if takes & set(labels)), None)


def stratified_folds(classes: Sequence[str], folds: int, seed: int = 0) -> list[int]:
    """A fold (1..`folds`) per clip: within each class, clips in a seeded random order dealt out in turn, each class's
    run starting where the previous one stopped, so folds differ in size by at most one clip and each holds about
    1/`folds` of every class."""
    rng = np.random.default_rng(seed)
    out = [0] * len(classes)
    start = 0
    for name in sorted(set(classes)):
        members = [i for i, c in enumerate(classes) if c == name]
        for k, index in enumerate(rng.permutation(members)):
            out[index] = (start + k) % folds + 1
        start = (start + len(members)) % folds
    return out


def safe_name(clip_id: str) -> str:
    """A file name from a clip id: characters other than letters, digits, '.', '-' and '_' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).strip("_") or "clip"


def write_folder_dataset(
    rows: Sequence[Mapping],
    rules: Sequence[tuple[str, set[str]]],
    out: str | Path,
    folds: int = 5,
    min_clips: int = 10,
    seed: int = 0,
    extra: Sequence[str] = (),
) -> dict:
    """Write `out/audio/<clip>.<ext>` and `out/labels.csv` (file, label, fold, and the `extra` columns of the rows) from
    AudioSet-format rows (`video_id`, `audio` {bytes, path}, `labels`): one class per clip by `rules`, classes with
    fewer than `min_clips` clips left out. Returns (and writes as build.json) the counts: kept per class, left out."""
    out = Path(out)
    assigned = [(row, assign_class(row["labels"], rules)) for row in rows]
    counts = Counter(name for _, name in assigned if name is not None)
    kept = {name for name, count in counts.items() if count >= min_clips}
    chosen = [(row, name) for row, name in assigned if name in kept]
    fold_of = stratified_folds([name for _, name in chosen], folds, seed)
    (out / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    records = []
    for (row, name), fold in zip(chosen, fold_of, strict=True):
        suffix = Path(row["audio"].get("path") or "").suffix or ".flac"
        file = f"{AUDIO_DIR}/{safe_name(str(row['video_id']))}{suffix}"
        (out / file).write_bytes(row["audio"]["bytes"])
        records.append({"file": file, "label": name, "fold": fold, **{c: row.get(c, "") for c in extra}})
    with open(out / CSV_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "fold", *extra])
        writer.writeheader()
        writer.writerows(records)
    summary = {
        "clips": len(records),
        "classes": {name: counts[name] for name in sorted(kept)},
        "left_out": {
            "classes_below_min_clips": {name: counts[name] for name in sorted(set(counts) - kept)},
            "clips_without_class": sum(name is None for _, name in assigned),
        },
        "folds": dict(sorted(Counter(fold_of).items())),
        "min_clips": min_clips,
        "seed": seed,
    }
    write_json(out / "build.json", summary, indent=1)
    return summary


# -- a user's dataset resampled once -------------------------------------------------------------------------------
def own_data_plan(own) -> dict[str, list]:
    """{split: [ClipTask]} of a user's dataset (`data.sources.OwnData`) read from files (a CSV folder, an
    audiofolder): labels as the classes' ids, their names as `human_labels`, and the other columns (fold, ...) kept
    as strings. Audio held as bytes (a Hub dataset) has no file to read: that is an error naming the clip."""
    from .shards import ClipTask, file_stamp

    plan = {}
    for split, rows in own.splits.items():
        extra = [c for c in rows.column_names if c not in ("video_id", "audio", "labels", "human_labels")]
        tasks = []
        for row in rows:
            path = (row["audio"] or {}).get("path")
            if not path or not Path(path).is_file():
                raise ValueError(f"clip {row['video_id']}: its audio is not a file ({path!r}); build from a folder of "
                                 "files (a CSV or an audiofolder), or train on the dataset directly.")  # fmt: skip
            names = tuple(own.taxonomy.name(node) for node in row["labels"])
            tasks.append(ClipTask(str(row["video_id"]), tuple(row["labels"]), names, path, file_stamp(path),
                                  tuple((c, "" if row[c] is None else str(row[c])) for c in extra)))  # fmt: skip
        plan[split] = tasks
    return plan
