"""What to tag: a collection of audio, each item with a key (its id in the output) and the audio to open.

- `FileCollection`: files as given, folders walked recursively (sorted, so every run and every process sees the
  same order) keeping the files that match the include patterns, and list files (one path a line). The key is the
  path as found (a folder's files: the folder joined with their path inside it).
- `DatasetCollection`: a `datasets` build or Hub dataset (`data.loading.load_audioset`), its audio column kept as
  `Audio(decode=False)` ({bytes, path}) and decoded by the package's one reader; the key is the row's id column
  (`video_id` where there is one), else the row's number.

Both are sequences of keys with `audio(index)`, what `data.audio_files.open_audio` opens: a path, or the row's bytes.
Keys are unique, because the output is the record of what is done (`tables`): a run that is started again skips the
keys already there.
"""

from __future__ import annotations

import fnmatch
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..data.audio_files import AudioFileError

# A folder's files that are tagged when no --include is given: the extensions of the formats soundfile reads.
AUDIO_PATTERNS = ("*.wav", "*.flac", "*.mp3", "*.ogg", "*.oga", "*.opus", "*.aif", "*.aiff", "*.au", "*.caf", "*.w64")


class FileCollection(Sequence):
    """Audio files by path. `keys` are the paths; `audio(i)` is the path itself."""

    def __init__(self, paths: Iterable[str]):
        self.keys = list(dict.fromkeys(str(path) for path in paths))  # a file listed twice is tagged once

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index):
        return self.keys[index]

    def audio(self, index: int) -> str:
        return self.keys[index]


class DatasetCollection(Sequence):
    """The rows of a `datasets.Dataset` with an undecoded audio column. `audio(i)` is the row's audio as a file
    object (its bytes) or its path; a row without audio is an `AudioFileError` naming it."""

    def __init__(self, dataset, audio_column: str = "audio", id_column: str | None = None):
        if audio_column not in dataset.column_names:
            raise ValueError(f"The dataset has no column {audio_column!r}; its columns: {dataset.column_names}")
        if id_column is None and "video_id" in dataset.column_names:
            id_column = "video_id"
        if id_column is not None and id_column not in dataset.column_names:
            raise ValueError(f"The dataset has no column {id_column!r}; its columns: {dataset.column_names}")
        self.audio_column = audio_column
        self.rows = dataset.select_columns([audio_column])
        self.keys = [str(key) for key in dataset[id_column]] if id_column else [str(i) for i in range(len(dataset))]
        _check_unique(self.keys, id_column)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index):
        return self.keys[index]

    def audio(self, index: int):
        audio = self.rows[index][self.audio_column]
        if audio is None:  # a Hub build lists a clip whose file is missing
            raise AudioFileError(self.keys[index], "no audio (the row's audio is None)")
        if audio.get("bytes"):
            return io.BytesIO(audio["bytes"])
        if audio.get("path"):
            return audio["path"]
        raise AudioFileError(self.keys[index], "no audio bytes and no path")


def _check_unique(keys: list[str], id_column: str | None) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(
                f"The id column {id_column!r} holds {key!r} more than once: the output names each row by its id, so "
                f"ids must be unique; pass another --id-column (or none, to number the rows)"
            )
        seen.add(key)


def folder_files(folder: str | os.PathLike, include: Sequence[str] = AUDIO_PATTERNS) -> list[str]:
    """The files under `folder`, recursively and sorted, whose path inside it (or whose name) matches one of the
    `include` patterns (`fnmatch`, case-insensitive: `*.wav` matches at any depth, `dogs/*.wav` in `dogs/`)."""
    patterns = [pattern.lower() for pattern in include]
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            inside = os.path.relpath(path, folder).replace(os.sep, "/").lower()
            if any(fnmatch.fnmatchcase(inside, p) or fnmatch.fnmatchcase(name.lower(), p) for p in patterns):
                found.append(path)
    return found


def list_file_paths(list_file: str | os.PathLike) -> list[str]:
    """The paths in a list file, one a line; blank lines and lines starting with `#` are skipped. A relative path is
    relative to the list file's folder (so a list travels with the files it names)."""
    base = Path(list_file).parent
    paths = []
    for line in Path(list_file).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(line if os.path.isabs(line) else str(base / line))
    return paths


def collect_files(
    inputs: Sequence[str], list_files: Sequence[str] = (), include: Sequence[str] | None = None
) -> FileCollection:
    """Files, folders (walked with `folder_files`) and list files, in the order given. A file named explicitly is
    always tagged, whatever its extension (a file that is not audio becomes a row with its error)."""
    paths: list[str] = []
    for item in inputs:
        paths += folder_files(item, include or AUDIO_PATTERNS) if os.path.isdir(item) else [item]
    for list_file in list_files:
        paths += list_file_paths(list_file)
    return FileCollection(paths)


def load_dataset_collection(
    source: str,
    split: str | None = None,
    config_name: str | None = None,
    audio_column: str = "audio",
    id_column: str | None = None,
) -> DatasetCollection:
    """A `datasets` build (a `save_to_disk` folder, parquet files or folder) or a Hub dataset, its audio undecoded."""
    import datasets

    from ..data.loading import load_audioset

    data = load_audioset(source, split, config_name)
    if isinstance(data, datasets.DatasetDict):
        raise ValueError(f"{source} has the splits {sorted(data)}: choose one with --split")
    feature = data.features.get(audio_column)
    if isinstance(feature, datasets.Audio) and feature.decode:  # datasets 5 decodes through torchcodec only
        data = data.cast_column(audio_column, datasets.Audio(decode=False))
    return DatasetCollection(data, audio_column, id_column)


__all__ = [
    "AUDIO_PATTERNS",
    "DatasetCollection",
    "FileCollection",
    "collect_files",
    "folder_files",
    "list_file_paths",
    "load_dataset_collection",
]
