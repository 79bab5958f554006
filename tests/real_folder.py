"""A tiny folder of real recordings, as a user has one: audio files at several sampling rates and formats, a CSV of
file, label and fold, a taxonomy CSV of our own, and the same recordings as an `audiofolder` (one folder per class).

Taken from the real-recording build of `make real-sounds` (outputs/real_sounds/sources, or $SPA_REAL_SOUNDS): four
classes of four recordings each; tests that need it skip where that build is absent."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from modeling_spa.waveforms import resample

REAL_SOURCES = Path(os.environ.get("SPA_REAL_SOUNDS", Path(__file__).parents[1] / "outputs/real_sounds/sources"))
# Our class -> the AudioSet label its recordings carry in the real-recording build.
CLASSES = {"dog": "/m/0bt9lr", "cat": "/m/01yrx", "kick": "/m/0bm02", "snare": "/m/06rvn"}
NAMES = {"dog": "Dog", "cat": "Cat", "kick": "Kick drum", "snare": "Snare"}  # as the taxonomy names them
PER_CLASS = 4
TAXONOMY = """id,name,parents,description
all,Everything,,
pets,Pets,all,Animals kept at home.
dog,Dog,pets,A dog barking.
cat,Cat,pets,A cat meowing.
drums,Drum kit,all,Drums of a kit.
kick,Kick drum,drums,The low thump of a kick drum.
snare,Snare,drums,The crack of a snare drum.
"""


def real_rows() -> list[dict]:
    """The first PER_CLASS recordings of each class from the real-recording build (all pools), in build order."""
    import datasets

    if not (REAL_SOURCES / "data").is_dir():
        pytest.skip(f"no real recordings at {REAL_SOURCES}: build them (make real-sounds)")
    data = datasets.load_dataset("parquet", data_files=str(REAL_SOURCES / "data" / "*.parquet"), split="train")
    data = data.cast_column("audio", datasets.Audio(decode=False))
    picked = {name: [] for name in CLASSES}
    for row in data:
        for name, mid in CLASSES.items():
            if mid in row["labels"] and len(picked[name]) < PER_CLASS:
                picked[name].append(row)
                break
    if any(len(rows) < PER_CLASS for rows in picked.values()):
        pytest.skip(f"the real-recording build has fewer than {PER_CLASS} recordings of a class: {picked.keys()}")
    return [dict(row, our_label=name) for name, rows in picked.items() for row in rows]


def write_clip(path: Path, flac: bytes, index: int) -> Path:
    """Every other clip as it came (FLAC, 16 kHz); the others as 44.1 kHz WAV (resampled), so the folder mixes rates
    and formats as users' folders do."""
    if index % 2 == 0:
        path = path.with_suffix(".flac")
        path.write_bytes(flac)
        return path
    samples, rate = soundfile.read(io.BytesIO(flac), dtype="float32")
    path = path.with_suffix(".wav")
    soundfile.write(path, resample(np.asarray(samples, np.float32), rate, 44100), 44100, subtype="PCM_16")
    return path


def make_real_folder(root: Path, name: str = "my_sounds") -> Path:
    """root/name/{audio/*, labels.csv (file,label,fold), taxonomy.csv}: 16 real recordings, folds 1 and 2 holding two
    of each class. Returns the folder."""
    folder = root / name
    (folder / "audio").mkdir(parents=True)
    lines = ["file,label,fold"]
    for i, row in enumerate(real_rows()):
        path = write_clip(folder / "audio" / f"{row['our_label']}_{i:02d}", row["audio"]["bytes"], i)
        label = NAMES[row["our_label"]] if i % 3 == 0 else row["our_label"]  # by name or by id
        lines.append(f"audio/{path.name},{label},{i % 2 + 1}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    (folder / "taxonomy.csv").write_text(TAXONOMY)
    return folder


def make_audiofolder(root: Path, name: str = "my_new_sounds") -> Path:
    """The same recordings as a `datasets` audiofolder: root/name/<class>/<file>."""
    folder = root / name
    for i, row in enumerate(real_rows()):
        (folder / row["our_label"]).mkdir(parents=True, exist_ok=True)
        write_clip(folder / row["our_label"] / f"clip_{i:02d}", row["audio"]["bytes"], i + 1)
    return folder
