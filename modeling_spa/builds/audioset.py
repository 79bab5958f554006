"""The AudioSet release as published: segment CSVs, and a folder of clips downloaded for them.

CSV format (`balanced_train_segments.csv`, `unbalanced_train_segments.csv`, `eval_segments.csv`): `#` comment lines,
then one segment a line, `YTID, start_seconds, end_seconds, "mid,mid,..."`. A line that does not parse is an error
naming file and line; so is a mid that is not one of the 527 labels (the CSVs and the ontology files then come
from different releases, and dropping the label would silently change the task).

Clip files are found anywhere under the clips folder, by name (the extension does not matter; the content is
decoded by soundfile, so WAV, FLAC, OGG/Vorbis/Opus and MP3 all work):
- `<YTID>.<ext>` or `Y<YTID>.<ext>` (PANNs' download script), the segment's own audio;
- `<YTID>_<start>.<ext>`, `<YTID>_<start>_<end>.<ext>` or `<YTID>_<start>-<end>.<ext>`, with times in seconds
  (`30`, `30.000`) or milliseconds (`30000`), as written by the common AudioSet downloaders.
YouTube ids are 11 characters, which is what makes `_` in an id and `_` before the start time distinguishable.
A file is taken to be the segment's audio as downloaders write it: a whole video is not cut to the segment.
A name with a start time matches only the segment that starts there; when several files match one segment, the one
with the start time in its name wins, then the first in name order (the others are listed in the report).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The Hub copy (agkphysics/AudioSet) has configs balanced / unbalanced / full, each with splits train and test.
CONFIG_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "balanced": {"train": ("balanced_train_segments.csv",), "test": ("eval_segments.csv",)},
    "unbalanced": {"train": ("unbalanced_train_segments.csv",), "test": ("eval_segments.csv",)},
    "full": {
        "train": ("balanced_train_segments.csv", "unbalanced_train_segments.csv"),
        "test": ("eval_segments.csv",),
    },
}
YTID_LENGTH = 11
_NAME = re.compile(
    r"^(?P<y>Y?)(?P<ytid>[A-Za-z0-9_-]{11})"
    r"(?:_(?P<start>\d+(?:\.\d+)?)(?:[_-](?P<end>\d+(?:\.\d+)?))?)?\.(?P<ext>[A-Za-z0-9]+)$"
)
# Files a downloader leaves beside the audio: never clips.
_NOT_AUDIO = {"json", "txt", "csv", "part", "ytdl", "log", "jpg", "jpeg", "png", "webp", "description"}


class SegmentsError(ValueError):
    """A segment CSV line that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Segment:
    ytid: str
    start: float
    end: float
    labels: tuple[str, ...]
    where: str  # "file:line", for messages


def _parse_line(fields: list[str], where: str, known: Mapping[str, str]) -> Segment:
    if len(fields) != 4:
        raise SegmentsError(f"{where}: expected 4 fields (YTID, start, end, labels), got {len(fields)}: {fields}")
    ytid, start, end, labels = (f.strip() for f in fields)
    if not ytid:
        raise SegmentsError(f"{where}: empty YTID")
    try:
        start_s, end_s = float(start), float(end)
    except ValueError:
        raise SegmentsError(f"{where}: start and end must be numbers, got {start!r} and {end!r}") from None
    if not 0 <= start_s < end_s:
        raise SegmentsError(f"{where}: segment {ytid} has start {start_s} and end {end_s}")
    mids = tuple(mid.strip() for mid in labels.split(",") if mid.strip())
    if not mids:
        raise SegmentsError(f"{where}: segment {ytid} has no labels")
    unknown = [mid for mid in mids if mid not in known]
    if unknown:
        raise SegmentsError(f"{where}: segment {ytid} has label(s) {unknown} that are not AudioSet labels")
    return Segment(ytid, start_s, end_s, mids, where)


def read_segments(path: str | Path, known_mids: Mapping[str, str]) -> list[Segment]:
    """The segments of one CSV, in file order. `known_mids` maps the valid mids (to their names)."""
    path = Path(path)
    segments = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = next(csv.reader([line], skipinitialspace=True))
            segments.append(_parse_line(fields, f"{path.name}:{number}", known_mids))
    return segments


def config_segments(csv_dir: str | Path, config: str, known_mids: Mapping[str, str]) -> dict[str, list[Segment]]:
    """{split: segments} of a config (`CONFIG_FILES`), reading the CSVs in `csv_dir`."""
    if config not in CONFIG_FILES:
        raise ValueError(f"Unknown config {config!r}; choose one of {sorted(CONFIG_FILES)}.")
    splits = {}
    for split, names in CONFIG_FILES[config].items():
        missing = [name for name in names if not (Path(csv_dir) / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{csv_dir}: no {', '.join(missing)} (the {config} config's {split} split)")
        splits[split] = [seg for name in names for seg in read_segments(Path(csv_dir) / name, known_mids)]
    return splits


def _same_time(named: str, seconds: float) -> bool:
    """A time in a file name, in seconds or in milliseconds, equals `seconds`."""
    value = float(named)
    return abs(value - seconds) < 1e-3 or abs(value - seconds * 1000) < 0.5


@dataclass(frozen=True)
class ClipFile:
    path: str
    start: str | None  # the start time in the name, if any
    end: str | None


class ClipIndex:
    """The clip files under a folder, by YTID."""

    def __init__(self, files: Mapping[str, Sequence[ClipFile]]):
        self.files = files

    @classmethod
    def scan(cls, folder: str | Path) -> ClipIndex:
        files: dict[str, list[ClipFile]] = {}
        for root, _, names in os.walk(folder):
            for name in names:
                match = _NAME.match(name)
                if match and match["ext"].lower() not in _NOT_AUDIO:
                    clip = ClipFile(os.path.join(root, name), match["start"], match["end"])
                    files.setdefault(match["ytid"], []).append(clip)
        for clips in files.values():
            clips.sort(key=lambda c: (c.start is None, c.path))  # a name with the start time first
        return cls(files)

    def find(self, segment: Segment) -> list[str]:
        """The files for `segment`, best first (empty: the clip is missing)."""
        return [
            clip.path
            for clip in self.files.get(segment.ytid, ())
            if clip.start is None
            or (_same_time(clip.start, segment.start) and (clip.end is None or _same_time(clip.end, segment.end)))
        ]
