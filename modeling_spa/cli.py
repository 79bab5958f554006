"""`spa-tag FILE... --model DIR_OR_HUB_ID`: tag audio files with an SPA checkpoint.

Files are decoded with soundfile (wav, flac, ogg, mp3, ...) block by block, mixed to mono and resampled to the
model's rate as a stream, and scored window by window with the windows and aggregation the model itself uses at
inference (`modeling_spa.windowing`), so memory stays bounded by a few windows whatever the file's length.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np
import soundfile
import torch

from .data import BadAudioError
from .windowing import AGGREGATIONS, WINDOWS_PER_BATCH, aggregate_logits, stream_windows, window_settings

# Frames decoded at a time: about 5.5 s at 48 kHz, 1 MiB of float32 per channel.
BLOCK_FRAMES = 1 << 18


def file_windows(path: str, sampling_rate: int, window: int, hop: int) -> Iterator[np.ndarray]:
    """The windows of an audio file at `sampling_rate` (see `windowing.stream_windows`), decoded in blocks.

    Raises `BadAudioError` naming the file when it cannot be read or holds NaN or infinite samples.
    """
    try:
        sound = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise BadAudioError(path, f"unreadable audio ({getattr(err, 'error_string', err)})") from err
    with sound:
        yield from stream_windows(_checked_blocks(sound, path), sound.samplerate, sampling_rate, window, hop)


def _checked_blocks(sound: soundfile.SoundFile, path: str) -> Iterator[np.ndarray]:
    while True:
        try:
            block = sound.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as err:
            raise BadAudioError(path, f"unreadable audio ({getattr(err, 'error_string', err)})") from err
        if len(block) == 0:
            return
        if not np.isfinite(block).all():
            raise BadAudioError(path, "audio contains NaN or inf")
        yield block


def _batches(windows: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch = []
    for window in windows:
        batch.append(window)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def too_short(samples: int, rate: int, min_samples: int) -> str:
    return f"too short: {samples} sample(s) at {rate} Hz, one analysis window of the model needs {min_samples}"


def file_scores(
    path: str,
    model,
    extractor,
    hop_s: float | None = None,
    aggregation: str | None = None,
    windows_per_batch: int = WINDOWS_PER_BATCH,
) -> np.ndarray:
    """Sigmoid scores (num_labels,) of one file: its windows scored in batches and aggregated as the model does.

    The window length comes from the model's config; `hop_s` and `aggregation` override the config's. A file
    shorter than one analysis window of the model's front-end is a `BadAudioError`.
    """
    settings = window_settings(model.config, hop_s, aggregation)
    rate = extractor.sampling_rate
    min_samples = model.spa.frontend.min_samples
    logits, weights = [], []
    for batch in _batches(file_windows(path, rate, settings.length, settings.hop), windows_per_batch):
        if len(batch[0]) < min_samples:  # only a whole file can be shorter than the window
            raise BadAudioError(path, too_short(len(batch[0]), rate, min_samples))
        # The extractor's defaults, as in the pipeline: a file shorter than the window is padded the same way.
        inputs = extractor(batch, sampling_rate=rate, return_tensors="pt")
        with torch.inference_mode():
            logits.append(model(**inputs.to(model.device)).logits.float().cpu())
        weights += [len(window) for window in batch]
    if not logits:  # an empty file, or one that resamples to nothing (1 sample at 96 kHz)
        raise BadAudioError(path, too_short(0, rate, min_samples))
    return aggregate_logits(torch.cat(logits), weights, settings.aggregation).sigmoid().numpy()


def tag_file(
    path: str, model, extractor, top_k: int, hop_s: float | None = None, aggregation: str | None = None
) -> list[dict]:
    """The `top_k` labels of one file: label, mid, sigmoid score and ontology path, best first."""
    scores = file_scores(path, model, extractor, hop_s, aggregation)
    config = model.config
    paths = config.label_paths or [""] * config.num_labels
    mids = config.label_mids or [""] * config.num_labels
    return [
        {"label": config.id2label[int(i)], "mid": mids[i], "score": float(scores[i]), "path": paths[i]}
        for i in np.argsort(-scores)[:top_k]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spa-tag", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="audio files (any format soundfile reads)")
    parser.add_argument("--model", required=True, help="a saved SPA model folder or a Hub id")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--window-hop", type=float, default=None, help="seconds between windows (default: the model's window_hop_s)"
    )
    parser.add_argument(
        "--aggregation", choices=AGGREGATIONS, default=None, help="default: the model's window_aggregation (mean)"
    )
    args = parser.parse_args(argv)

    # This package's __init__ has run, so SPA is registered with the Auto classes.
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(args.model).to(args.device).eval()
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    try:
        window_settings(model.config, args.window_hop, args.aggregation)
    except ValueError as err:
        parser.error(str(err))
    failed = 0
    for path in args.files:
        try:
            labels = tag_file(path, model, extractor, args.top_k, args.window_hop, args.aggregation)
        except (BadAudioError, ValueError) as err:  # unreadable, or too short for one analysis window
            print(f"error: {err if isinstance(err, BadAudioError) else f'{path}: {err}'}", file=sys.stderr)
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
