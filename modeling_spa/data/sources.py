"""Data from where users have it, as rows the training and evaluation loaders read: `video_id`, `audio`
(`Audio(decode=False)`, {bytes, path}), `labels` (ids of the taxonomy's classes), plus the source's other columns.

Three sources (`open_own_data`):
- a folder of audio files with a CSV (`--dataset labels.csv`): a `file` column (a path relative to the CSV's folder,
  or to `audio_dir`), a `label` or `labels` column (several labels joined by ";"), optionally `split` and `fold`;
- a `datasets` `audiofolder` (`--dataset audiofolder --data_dir DIR`): class folders, or a `metadata.csv`;
- any local or Hub `datasets` audio dataset with a label column (`--label_column`): `ClassLabel`, a sequence of them,
  strings or lists of strings; a `save_to_disk` folder or parquet too.

Audio is never decoded here: files are read, mixed down and resampled on the fly by the loaders' workers
(`data.decoding`), at any sampling rate; `recipes/build_own_data.py` resamples once into a parquet build instead.

Labels map to the taxonomy's nodes by id or by name; every unknown label is listed in one error with the closest
known names. Without a taxonomy the labels are a flat label list (SPA's text from the names; no OBCE, no OmAP).
The classes, in output order: `classes` when given, else a `ClassLabel`'s names, else the labels the data uses in the
taxonomy's order. A dataset whose every clip has one label is single-label (softmax cross-entropy, accuracy).
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..configuration_spa import MULTI_LABEL, SINGLE_LABEL
from ..taxonomy import Taxonomy, load_taxonomy, read_label_list
from .loading import keep_audio_undecoded, load_audioset

LABEL_COLUMNS = ("labels", "label", "category", "class")  # looked for, in this order, without --label_column
FILE_COLUMNS = ("file", "filename", "path", "audio")
LABEL_SEPARATOR = ";"  # between several labels in a CSV cell (names may hold commas: "Male speech, man speaking")
AUTO = "auto"


@dataclass
class OwnData:
    """A user's dataset, as the loaders read it: splits of rows, the classes (ids, output order) and their taxonomy."""

    splits: dict  # split name -> datasets.Dataset of rows
    classes: list[str]
    taxonomy: Taxonomy
    problem_type: str
    origin: str

    def describe(self) -> str:
        kind = "single-label" if self.problem_type == SINGLE_LABEL else "multi-label"
        sizes = ", ".join(f"{name} {len(rows)}" for name, rows in self.splits.items())
        return f"{self.origin}: {len(self.classes)} classes of {self.taxonomy!r}, {kind}; clips: {sizes}."


def is_own_data(dataset: str, label_column: str | None = None, taxonomy: str | None = None) -> bool:
    """Whether `dataset` is read by this module: a CSV, an audiofolder, or a label column / taxonomy named."""
    return dataset.lower().endswith((".csv", ".tsv")) or dataset == "audiofolder" or bool(label_column or taxonomy)


# -- reading the sources ---------------------------------------------------------------------------------------------
def _struct_audio(paths: Sequence[str | None]):
    """The `audio` column of files on disk: {bytes: None, path}, as `Audio(decode=False)` (never torchcodec)."""
    return [None if path is None else {"bytes": None, "path": path} for path in paths]


def read_folder_csv(csv_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, file_column=None):
    """A folder of audio files and a CSV (or TSV) naming them: a `datasets.DatasetDict` (by its `split` column, else one
    "train" split) with `video_id` (the file's path as written), `audio` and the CSV's other columns as strings. Every
    missing file is listed in one error."""
    import datasets

    csv_path = Path(csv_path)
    folder = Path(audio_dir) if audio_dir else csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if csv_path.suffix.lower() == ".tsv" else ","))
    if not rows:
        raise ValueError(f"{csv_path}: no rows.")
    columns = list(rows[0])
    file_column = file_column or next((c for c in FILE_COLUMNS if c in columns), None)
    if file_column is None or file_column not in columns:
        raise ValueError(f"{csv_path}: no file column (one of {FILE_COLUMNS}); its columns: {columns}.")
    missing = [f"row {n} ({row[file_column]!r})" for n, row in enumerate(rows, start=2)
               if not (folder / row[file_column]).is_file()]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"{csv_path}: {len(missing)} file(s) not found under {folder}: "
                                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.")  # fmt: skip
    others = [c for c in columns if c not in (file_column, "split")]
    splits: dict[str, list[dict]] = {}
    for row in rows:
        splits.setdefault(row.get("split") or "train", []).append(row)
    struct = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    features = datasets.Features({"video_id": datasets.Value("string"), "audio": struct,
                                  **{c: datasets.Value("string") for c in others}})  # fmt: skip
    built = {}
    for name, part in splits.items():
        table = {"video_id": [row[file_column] for row in part],
                 "audio": _struct_audio([str((folder / row[file_column]).resolve()) for row in part]),
                 **{c: [row[c] for row in part] for c in others}}  # fmt: skip
        built[name] = datasets.Dataset.from_dict(table, features=features).cast_column(
            "audio", datasets.Audio(decode=False)
        )
    return datasets.DatasetDict(built)


AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64"}
# Split folder names as `datasets` recognises them in a data folder, and the split each names.
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test", "eval": "test",
                 "evaluation": "test"}  # fmt: skip
METADATA = "metadata.csv"


def read_audiofolder(data_dir: str | os.PathLike):
    """A `datasets` audiofolder, read as `load_dataset("audiofolder", data_dir=...)` lays it out: audio files in class
    folders (the folder's name is the label: a `ClassLabel` of the sorted names), optionally inside split folders
    (train/, validation/, test/ and their synonyms), or listed with their labels in a `metadata.csv` (`file_name` and
    the other columns). Read here because datasets' builder encodes the audio column through torchcodec, which cannot
    load against CPU-only torch (DESIGN.md section 5); audio stays undecoded."""
    import datasets

    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"The audiofolder {root} is not a folder.")
    tops = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_FOLDERS]
    parts = {SPLIT_FOLDERS[d.name.lower()]: d for d in tops} or {"train": root}
    struct = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    built = {}
    for split, folder in parts.items():
        if (folder / METADATA).is_file() or (root / METADATA).is_file():
            table, features = _audiofolder_metadata(folder if (folder / METADATA).is_file() else root, folder)
        else:
            table, features = _audiofolder_classes(folder)
        features = datasets.Features({"audio": struct, **features})
        built[split] = datasets.Dataset.from_dict(table, features=features).cast_column(
            "audio", datasets.Audio(decode=False)
        )
    classes = [set(ds.features["label"].names) for ds in built.values() if "label" in ds.features]
    if classes and any(names != classes[0] for names in classes):  # one ClassLabel for every split, as datasets makes
        names = sorted(set().union(*classes))
        built = {k: _relabel(ds, names) for k, ds in built.items()}
    return datasets.DatasetDict(built)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _audiofolder_classes(folder: Path) -> tuple[dict, dict]:
    import datasets

    files = _audio_files(folder)
    if not files:
        raise ValueError(f"The audiofolder {folder} holds no audio files ({sorted(AUDIO_SUFFIXES)}).")
    loose = [str(f.relative_to(folder)) for f in files if f.parent == folder]
    if loose:
        raise ValueError(f"{folder}: audio files outside a class folder ({', '.join(loose[:5])}): put each class's "
                         f"files in a folder named after the class, or list files and labels in {METADATA} "
                         "(columns file_name, label).")  # fmt: skip
    labels = [f.parent.name for f in files]
    names = sorted(set(labels))
    table = {"audio": [{"bytes": None, "path": str(f.resolve())} for f in files],
             "label": [names.index(label) for label in labels]}  # fmt: skip
    return table, {"label": datasets.ClassLabel(names=names)}


def _audiofolder_metadata(metadata_folder: Path, folder: Path) -> tuple[dict, dict]:
    import datasets

    with (metadata_folder / METADATA).open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "file_name" not in rows[0]:
        raise ValueError(f"{metadata_folder / METADATA}: needs a 'file_name' column (audiofolder's metadata).")
    rows = [row for row in rows if (metadata_folder / row["file_name"]).resolve().is_relative_to(folder.resolve())]
    if missing := [row["file_name"] for row in rows if not (metadata_folder / row["file_name"]).is_file()]:
        raise FileNotFoundError(f"{metadata_folder / METADATA}: {len(missing)} file(s) not found: {missing[:10]}.")
    others = [c for c in rows[0] if c != "file_name"] if rows else []
    table = {"audio": [{"bytes": None, "path": str((metadata_folder / r["file_name"]).resolve())} for r in rows],
             **{c: [r[c] for r in rows] for c in others}}  # fmt: skip
    return table, {c: datasets.Value("string") for c in others}


def _relabel(split, names: list[str]):
    import datasets

    old = split.features["label"].names
    split = split.map(lambda row: {"label": names.index(old[row["label"]])}, keep_in_memory=True)
    return split.cast_column("label", datasets.ClassLabel(names=names))


def read_source(dataset: str, config_name: str | None = None, data_dir: str | None = None, audio_dir=None):
    """The source's splits as a `datasets.DatasetDict`, audio undecoded: a CSV folder, an audiofolder, a save_to_disk
    or parquet build, or a Hub dataset."""
    import datasets

    if dataset.lower().endswith((".csv", ".tsv")):
        return read_folder_csv(dataset, audio_dir)
    if dataset == "audiofolder":
        if not data_dir:
            raise ValueError("An audiofolder needs its folder: --data_dir DIR (as load_dataset('audiofolder', ...)).")
        return read_audiofolder(data_dir)
    if os.path.isdir(dataset) and not any(Path(dataset).rglob("*.parquet")) and not any(Path(dataset).rglob("*.arrow")):
        return read_audiofolder(dataset)  # a local folder of audio files is an audiofolder, as datasets infers
    if os.path.isdir(dataset) or dataset.endswith(".parquet"):
        data = load_audioset(dataset, None, config_name)
    else:
        data = datasets.load_dataset(dataset, config_name, data_dir=data_dir)
    data = data if isinstance(data, dict) else datasets.DatasetDict({"train": data})
    return datasets.DatasetDict(keep_audio_undecoded(dict(data)))


# -- labels ----------------------------------------------------------------------------------------------------------
def label_column_of(split, label_column: str | None) -> str:
    if label_column:
        if label_column not in split.column_names:
            raise ValueError(f"No label column {label_column!r}; the columns are {split.column_names}.")
        return label_column
    found = next((c for c in LABEL_COLUMNS if c in split.column_names), None)
    if found is None:
        raise ValueError(f"No label column (one of {LABEL_COLUMNS}); name it with --label_column. "
                         f"The columns are {split.column_names}.")  # fmt: skip
    return found


def clip_labels(split, column: str, separator: str = LABEL_SEPARATOR) -> list[list[str]]:
    """Each clip's labels as strings: `ClassLabel` ints become their names, a sequence stays a list, a string cell
    from a CSV is split at `separator` (a string of another source is one label)."""
    import datasets

    feature = split.features[column]
    inner = getattr(feature, "feature", None)
    values = split[column]
    if isinstance(feature, datasets.ClassLabel):
        return [[feature.int2str(v)] if v is not None and v >= 0 else [] for v in values]
    if isinstance(inner, datasets.ClassLabel):
        return [[inner.int2str(v) for v in row] for row in values]
    if isinstance(feature, datasets.Sequence | datasets.List) or (values and isinstance(values[0], list)):
        return [[str(v) for v in row] for row in values]
    return [[part.strip() for part in str(v).split(separator) if part.strip()] if v is not None else []
            for v in values]  # fmt: skip


def class_label_names(split, column: str) -> list[str] | None:
    """The names of a `ClassLabel` column (or a sequence of one), in their order; None for strings."""
    import datasets

    feature = split.features[column]
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


# -- the whole -------------------------------------------------------------------------------------------------------
def open_own_data(
    dataset: str,
    config_name: str | None = None,
    data_dir: str | None = None,
    label_column: str | None = None,
    taxonomy: str | Taxonomy | None = None,
    classes: str | Sequence[str] | None = None,
    problem_type: str = AUTO,
    fold_column: str | None = None,
    test_fold: str | None = None,
    audio_dir: str | None = None,
) -> OwnData:
    """Read a user's dataset (module docstring) into `OwnData`. `taxonomy`: a `Taxonomy`, a file or "audioset" (None:
    the labels are a flat list); `classes`: a file of ids or names, or their list. With `fold_column` and `test_fold`,
    the clips of that fold are the "test" split and the others "train" (cross-validation; the validation split is then
    the hold-out of train, `data.splits`)."""
    raw = read_source(dataset, config_name, data_dir, audio_dir)
    first = next(iter(raw.values()))
    column = label_column_of(first, label_column)
    labels = {name: clip_labels(split, column) for name, split in raw.items()}
    used = list(dict.fromkeys(label for rows in labels.values() for clip in rows for label in clip))
    if taxonomy is not None:
        tree = load_taxonomy(taxonomy)
        ids = dict(zip(used, tree.ids_of(used), strict=True))  # every unknown label in one error
    else:  # a flat label list: labels that differ only in case or spacing are one class, spelled as first seen
        names = class_label_names(first, column) or used
        spelling = {}
        for name in names:
            spelling.setdefault(_normal(name), name)
        names = class_label_names(first, column) or sorted(spelling.values(), key=str.casefold)
        ids = {label: spelling[_normal(label)] for label in used}
        tree = Taxonomy.flat(names, title=f"labels of {Path(dataset).name}")
    order = {node: i for i, node in enumerate(tree.nodes)}
    if classes:
        class_ids = tree.ids_of(read_label_list(classes) if isinstance(classes, str | os.PathLike) else classes)
    elif names := class_label_names(first, column):
        class_ids = tree.ids_of(names)
    else:
        class_ids = sorted(set(ids.values()), key=order.__getitem__)
    outside = sorted(set(ids.values()) - set(class_ids))
    if outside:
        raise ValueError(f"Labels of the data that are not among the classes ({classes}): {outside[:10]}.")
    rows = {name: [[ids[label] for label in clip] for clip in labels[name]] for name in raw}
    kind = _problem_type(problem_type, rows)
    splits = {name: _as_rows(split, rows[name], column) for name, split in raw.items()}
    if fold_column:
        splits = fold_splits(splits, fold_column, test_fold)
    origin = f"{dataset}" + (f" ({data_dir})" if data_dir else "")
    return OwnData(splits, class_ids, tree.with_labels(class_ids), kind, origin)


def _normal(label: str) -> str:
    return " ".join(label.casefold().split())


def _problem_type(asked: str, rows: dict[str, list[list[str]]]) -> str:
    if asked in (SINGLE_LABEL, MULTI_LABEL):
        return asked
    if asked != AUTO:
        raise ValueError(f"problem_type must be auto, {SINGLE_LABEL} or {MULTI_LABEL}; got {asked!r}.")
    return SINGLE_LABEL if all(len(clip) == 1 for split in rows.values() for clip in split) else MULTI_LABEL


def _as_rows(split, labels: list[list[str]], label_column: str):
    """`split` with `labels` (ids), a `video_id` (kept, else the file's name, else the split position) and `audio`."""
    if "audio" not in split.column_names:
        raise ValueError(f"No 'audio' column; the columns are {split.column_names}.")
    keep = [c for c in split.column_names if c not in ("labels", label_column)]
    split = split.select_columns(keep).add_column("labels", labels)
    if "video_id" not in split.column_names:
        split = split.add_column("video_id", clip_names(split))
    return split


def clip_names(split) -> list[str]:
    """A name per clip: its file's name where the audio has a path (read from Arrow: no audio bytes are copied), else
    its position."""
    import pyarrow.compute as pc

    audio = split.select_columns(["audio"]).with_format("arrow")[:].column("audio")
    paths = pc.struct_field(audio, "path").to_pylist()
    return [os.path.basename(path) if path else f"clip-{i}" for i, path in enumerate(paths)]


def fold_splits(splits: dict, fold_column: str, test_fold: str | None) -> dict:
    """All clips, the `test_fold` ones as "test" and the others as "train" (without `test_fold`: all as "train")."""
    import datasets

    every = datasets.concatenate_datasets(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
    if fold_column not in every.column_names:
        raise ValueError(f"No fold column {fold_column!r}; the columns are {every.column_names}.")
    folds = [str(f) for f in every[fold_column]]
    if test_fold is None:
        return {"train": every}
    if str(test_fold) not in folds:
        raise ValueError(f"No clip has {fold_column} = {test_fold!r}; the folds are {sorted(set(folds))}.")
    test = [i for i, f in enumerate(folds) if f == str(test_fold)]
    train = [i for i, f in enumerate(folds) if f != str(test_fold)]
    return {"train": every.select(train), "test": every.select(test)}


def folds_of(dataset: str, fold_column: str, **source) -> list[str]:
    """The distinct values of the fold column, sorted (numerically where they are numbers)."""
    raw = read_source(dataset, **source)
    values = {str(v) for split in raw.values() for v in split[fold_column]} if raw else set()
    return sorted(values, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def cached_own_data(*args) -> OwnData:
    """`open_own_data` once per process for the same arguments (the plan, the model and the loaders all read it)."""
    return open_own_data(*args)
