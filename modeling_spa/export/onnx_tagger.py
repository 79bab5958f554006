"""Tag audio files with an exported SPA model: numpy, soundfile and onnxruntime, no torch, no SPA package.

    python tag_onnx.py FILE... [--top-k 5] [--json] [--model-dir DIR]

`spa-export` copies this file into its output folder as `tag_onnx.py`, beside `frontend.onnx` (waveform window ->
log-mel features and frame mask), `model.onnx` (features -> logits and audio embeddings), `labels.json` and
`export.json` (sampling rate, window, hop, aggregation). It scores a file as `spa-tag` does, with the same code:
decoded forward in blocks, mixed to mono, resampled to the model's rate as a stream (soxr, quality "HQ"; needed only
when the file's rate differs), cut into full windows at 0, hop, 2·hop, ... plus one aligned to the end (a clip of at
most one window is one window, zero-padded, its padding masked), the windows scored in batches, and their sigmoid
scores averaged weighted by real samples (`mean`) or maxed (`max`). Memory stays at a few windows and one block
whatever the file's length.

Files are read by the package's one reader (`modeling_spa/data/audio_files.py`, with `modeling_spa/waveforms.py`),
which `spa-export` copies beside this file: the exported tagger reads files exactly as `spa-tag`, the data loader and
the dataset builders do. It must stay importable on its own: it imports nothing else from the SPA package and never
torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # in the package
    from ..data.audio_files import AudioFileError, batches, file_windows, too_short
except ImportError:  # in an export folder, beside audio_files.py (also when run by path from elsewhere)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from audio_files import AudioFileError, batches, file_windows, too_short

WINDOWS_PER_BATCH = 16
PROBABILITY_EPS = 1e-12


@dataclass(frozen=True)
class Settings:
    """What `export.json` records for inference."""

    sampling_rate: int
    window: int  # samples per window
    hop: int
    aggregation: str
    min_samples: int  # the shortest clip that fills one analysis window of the front-end


@dataclass
class ExportedTagger:
    """The two onnxruntime sessions, the settings and the class names, mids and ontology paths."""

    frontend: object
    model: object
    settings: Settings
    labels: dict


def load(
    folder: str | Path, threads: int | None = None, spinning: bool = True, memory_arena: bool = False
) -> ExportedTagger:
    """The exported model in `folder` (what `spa-export` wrote); `threads`: onnxruntime's intra-op threads (None:
    its default, one per core); `spinning=False` lets idle threads sleep at once (on a busy machine spinning threads
    steal the cores that do the work).

    `memory_arena`: onnxruntime's CPU memory arena, off by default. It keeps what runs allocated and, over the 15
    batches of a 40-minute file (a tiny CNN14, 10 s windows), grew the tagger's peak RSS to 688 MB where 3 minutes
    peak at 388; without it the 40 minutes peak at 389 MB, no slower.
    """
    import onnxruntime

    folder = Path(folder)
    info = json.loads((folder / "export.json").read_text())
    settings = Settings(**{key: info["inference"][key] for key in Settings.__dataclass_fields__})
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    options.enable_cpu_mem_arena = memory_arena
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def session(name: str):
        return onnxruntime.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

    labels = json.loads((folder / "labels.json").read_text())
    return ExportedTagger(session("frontend.onnx"), session("model.onnx"), settings, labels)


# -- scoring --------------------------------------------------------------------------------------------------------


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Window starts: 0, hop, ... while they fit, plus one ending at the clip's end if the last stops short of it."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def windows(wave: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, window) samples, their (windows, window) mask of real samples, and each window's real samples."""
    starts = window_starts(len(wave), settings.window, settings.hop)
    return padded([wave[start : start + settings.window] for start in starts], settings.window)


def padded(pieces: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows (a clip no longer than one window is shorter) zero-padded to `window` samples: values, the mask of
    real samples, each window's real samples."""
    values = np.zeros((len(pieces), window), dtype=np.float32)
    mask = np.zeros((len(pieces), window), dtype=bool)
    for row, piece in enumerate(pieces):
        values[row, : len(piece)] = piece
        mask[row, : len(piece)] = True
    return values, mask, mask.sum(axis=1).astype(np.float64)


def window_logits(tagger: ExportedTagger, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits (windows, classes) of windows, scored in batches of `WINDOWS_PER_BATCH`."""
    logits = []
    for first in range(0, len(values), WINDOWS_PER_BATCH):
        batch = {
            "input_values": values[first : first + WINDOWS_PER_BATCH],
            "attention_mask": mask[first : first + WINDOWS_PER_BATCH],
        }
        features, frame_mask = tagger.frontend.run(None, batch)
        logits.append(tagger.model.run(["logits"], {"features": features, "frame_mask": frame_mask})[0])
    return np.concatenate(logits)


def aggregate(logits: np.ndarray, weights: np.ndarray, aggregation: str) -> np.ndarray:
    """A clip's scores (classes,) from its windows' logits: the weighted mean of the sigmoid scores, or the max."""
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if len(logits) == 1:
        return scores[0]
    if aggregation == "max":
        return scores.max(axis=0)
    if aggregation != "mean":
        raise ValueError(f"Unknown window aggregation {aggregation!r}")
    mean = (scores * weights[:, None]).sum(axis=0) / weights.sum()
    return np.clip(mean, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)


def file_scores(tagger: ExportedTagger, path: str | Path) -> np.ndarray:
    """Scores (classes,) of one file, as `spa-tag` computes them: its windows streamed (`file_windows`) and scored
    `WINDOWS_PER_BATCH` at a time. `AudioFileError` naming the file when it cannot be read or is too short."""
    settings = tagger.settings
    logits, weights = [], []
    streamed = file_windows(path, settings.sampling_rate, settings.window, settings.hop)
    for batch in batches(streamed, WINDOWS_PER_BATCH):
        if len(batch[0]) < settings.min_samples:  # only a whole file can be shorter than the window
            raise AudioFileError(str(path), too_short(len(batch[0]), settings.sampling_rate, settings.min_samples))
        values, mask, real = padded(batch, settings.window)
        logits.append(window_logits(tagger, values, mask))
        weights.append(real)
    if not logits:  # an empty file, or one that resamples to nothing
        raise AudioFileError(str(path), too_short(0, settings.sampling_rate, settings.min_samples))
    return aggregate(np.concatenate(logits), np.concatenate(weights), settings.aggregation)


def top_labels(tagger: ExportedTagger, scores: np.ndarray, top_k: int) -> list[dict]:
    """The `top_k` classes: label, mid, score and ontology path, best first (ties: lower class index first)."""
    labels = tagger.labels
    order = np.argsort(-scores, kind="stable")[:top_k]
    mids = labels.get("mids") or [""] * len(scores)
    paths = labels.get("paths") or [""] * len(scores)
    return [{"label": labels["names"][i], "mid": mids[i], "score": float(scores[i]), "path": paths[i]} for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="audio files (any format soundfile reads)")
    parser.add_argument("--model-dir", default=str(Path(__file__).resolve().parent), help="the export folder")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args(argv)
    tagger = load(args.model_dir)
    failed = 0
    for path in args.files:
        try:
            labels = top_labels(tagger, file_scores(tagger, path), args.top_k)
        except ValueError as err:  # unreadable, not audio, too short (AudioFileError names the file)
            print(f"error: {err if isinstance(err, AudioFileError) else f'{path}: {err}'}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": path, "labels": labels}))
            continue
        print(path)
        for item in labels:
            print(f"  {item['score']:.3f}  {item['label']:<40s} {item['path']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
