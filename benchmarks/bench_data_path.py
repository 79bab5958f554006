"""Training data path: decode + crop + collate, clips/s per DataLoader worker, builder output vs on-the-fly resampling.

    python benchmarks/bench_data_path.py [--clips 192] [--batch-size 32] [--workers N] [--repeats 3] [--json PATH]

The same N synthetic 10 s clips (demo sounds over a noise floor, two slightly different channels) in two forms:
- `builder`: what `recipes/build_audioset.py` writes: decoded, mixed to mono, resampled once to 32 kHz and stored as
  16-bit FLAC (`modeling_spa.builds.encode_clip`, the builder's own function);
- `on_the_fly`: 48 kHz stereo 16-bit FLAC, as most clips of the Hub copy are, mixed and resampled in every epoch.

Each form is read through `AudioSetCollator` (training mode: a random 10 s crop, here the whole clip) in a
`DataLoader` with 1 worker and with the default worker count (`modeling_spa.data.default_num_workers`), over the
same clips; times are the best of `--repeats` passes of persistent workers after a warm-up pass (as epochs after
the first). `builder_streamed` reads the builder's form as `--streaming` does (rows read and shuffled in the main
process, sent to the workers through the DataLoader's queue). A stage profile (decode, mono, resample, crop, collate)
runs in this process. Figures are per worker: on a machine whose cores are busy with other work they are lower
bounds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
from torch.utils.data import DataLoader

from modeling_spa.builds import synthetic as demo_sounds
from modeling_spa.builds.shards import ClipTask, encode_clip
from modeling_spa.data import AudioSetCollator, RandomCrop, decode_audio, default_num_workers
from modeling_spa.waveforms import mix_to_mono

RATE = 32000
SOURCE_RATE = 48000
CLIP_S = 10.0
LABEL = "/m/0k4j"  # any mid: the collator encodes it; the classes play no part in the timing


def synthesise(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` 10 s stereo clips at 48 kHz: one demo sound each over a faint noise floor, channels slightly apart."""
    rng = np.random.default_rng(seed)
    synths = list(demo_sounds.SOUND_CLASSES.values())
    clips = []
    for _ in range(count):
        sound = synths[rng.integers(len(synths))](rng, CLIP_S, SOURCE_RATE)
        sound = 0.5 * sound / max(np.abs(sound).max(), 1e-6)
        left = sound + 0.003 * rng.standard_normal(sound.size)
        right = np.roll(sound, int(rng.integers(1, 40))) + 0.003 * rng.standard_normal(sound.size)
        clips.append(np.stack([left, right], axis=1).astype(np.float32))
    return clips


def build_rows(clips: list[np.ndarray], folder: Path) -> dict[str, list[dict]]:
    """Both forms of the same clips: 48 kHz stereo FLAC files, and the builder's 32 kHz mono FLAC of those files."""
    forms = {"builder": [], "on_the_fly": []}
    for i, clip in enumerate(clips):
        path = folder / f"clip{i:04d}.flac"
        soundfile.write(path, clip, SOURCE_RATE, format="FLAC", subtype="PCM_16")
        row = encode_clip(ClipTask(f"clip{i:04d}", (LABEL,), ("x",), str(path)), RATE)
        forms["builder"].append(row)
        forms["on_the_fly"].append({**row, "audio": {"bytes": path.read_bytes(), "path": path.name}})
    return forms


def loader_pass(loader: DataLoader, clips: int) -> float:
    """Seconds for one pass over the loader's clips."""
    start = time.perf_counter()
    seen = sum(len(batch["clip_ids"]) for batch in loader)
    assert seen == clips
    return time.perf_counter() - start


def throughput(rows: list[dict], workers: int, batch_size: int, repeats: int) -> dict:
    """Steady state, as in training: persistent workers, started and warmed up by a first pass that is not timed."""
    collator = AudioSetCollator(RATE, [LABEL], max_length_s=CLIP_S, train=True, seed=0)
    loader = DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=workers,
                        persistent_workers=workers > 0)  # fmt: skip
    loader_pass(loader, len(rows))
    best = min(loader_pass(loader, len(rows)) for _ in range(repeats))
    clips_per_s = len(rows) / best
    return {"workers": workers, "clips_per_s": clips_per_s, "clips_per_s_per_worker": clips_per_s / max(workers, 1)}


def streamed_throughput(rows: list[dict], folder: Path, workers: int, batch_size: int, repeats: int) -> dict:
    """The builder's clips as `--streaming` reads them: a parquet file streamed and shuffled (buffer 256) in the
    main process, the rows handed to the workers through the DataLoader's index queue, decoded there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modeling_spa.builds.shards import ROW_GROUP_SIZE, audioset_features
    from modeling_spa.data.splits import SplitSpec
    from modeling_spa.data.streaming import Rows, StreamBatchSampler, StreamReader, open_part, training_stream

    path = folder / "data" / "train-00000-of-00001.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True)
        table = pa.Table.from_pylist(rows, schema=audioset_features().arrow_schema)  # as the builder writes shards
        pq.write_table(table, path, row_group_size=ROW_GROUP_SIZE)
    stream = training_stream(open_part(str(folder), SplitSpec("train", "train")), seed=0, buffer_size=256)
    per_epoch = len(rows) // batch_size
    sampler = StreamBatchSampler(StreamReader(stream), batch_size, per_epoch)
    collator = AudioSetCollator(RATE, [LABEL], max_length_s=CLIP_S, train=True, seed=0)
    loader = DataLoader(Rows(per_epoch * batch_size), batch_sampler=sampler, collate_fn=collator,
                        num_workers=workers, persistent_workers=workers > 0)  # fmt: skip
    clips = per_epoch * batch_size
    loader_pass(loader, clips)
    best = min(loader_pass(loader, clips) for _ in range(repeats))
    sampler.reader.close()
    return {"workers": workers, "clips_per_s": clips / best, "clips_per_s_per_worker": clips / best / max(workers, 1)}


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def stage_profile(forms: dict[str, list[dict]], batch_size: int) -> dict:
    """Milliseconds per clip of each stage, in this process (no workers)."""
    n = len(forms["builder"])
    files = {form: [row["audio"]["bytes"] for row in rows] for form, rows in forms.items()}
    stereo = [soundfile.read(io.BytesIO(b), dtype="float32", always_2d=True)[0] for b in files["on_the_fly"]]
    mono = [mix_to_mono(x) for x in stereo]
    collator = AudioSetCollator(RATE, [LABEL], max_length_s=CLIP_S, train=True, seed=0)
    half = RandomCrop(int(RATE * CLIP_S / 2), np.random.default_rng(0))
    stages = {
        "builder: decode 32 kHz mono FLAC": lambda: [
            soundfile.read(io.BytesIO(b), dtype="float32") for b in files["builder"]
        ],
        "builder: decode_audio (10 s window)": lambda: [decode_audio({"bytes": b}, RATE) for b in files["builder"]],
        "builder: decode_audio (5 s window)": lambda: [
            decode_audio({"bytes": b}, RATE, crop=half) for b in files["builder"]
        ],
        "builder: collate (decode included)": lambda: [
            collator(forms["builder"][i : i + batch_size]) for i in range(0, n, batch_size)
        ],
        "on the fly: decode 48 kHz stereo FLAC": lambda: [
            soundfile.read(io.BytesIO(b), dtype="float32", always_2d=True) for b in files["on_the_fly"]
        ],
        "on the fly: stereo to mono": lambda: [mix_to_mono(x) for x in stereo],
        "on the fly: stereo to mono with mean(axis=1)": lambda: [x.mean(axis=1) for x in stereo],
        "on the fly: resample 48 -> 32 kHz (soxr)": lambda: [soxr.resample(x, SOURCE_RATE, RATE) for x in mono],
    }
    return {name: round(1000 * timed(fn) / n, 3) for name, fn in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="the second worker count (default: the library's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    source = synthesise(args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        forms = build_rows(source, Path(tmp))
    default_workers = args.workers if args.workers is not None else default_num_workers()
    counts = sorted({1, max(default_workers, 1)})
    # datasets 5.2 pauses 5 s at the end of every pass of a shuffled parquet stream (a guard for interpreter exit):
    # once per pass of the real data, it would dominate the passes of a few hundred clips timed here.
    import datasets.config

    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    with tempfile.TemporaryDirectory() as tmp:
        streamed = [streamed_throughput(forms["builder"], Path(tmp), w, args.batch_size, args.repeats) for w in counts]
    figures = {
        "clips": args.clips,
        "clip_s": CLIP_S,
        "batch_size": args.batch_size,
        "default_workers": default_workers,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "mean_bytes": {form: float(np.mean([len(r["audio"]["bytes"]) for r in rows])) for form, rows in forms.items()},
        "loader": {
            form: [throughput(rows, workers, args.batch_size, args.repeats) for workers in counts]
            for form, rows in forms.items()
        }
        | {"builder_streamed": streamed},
        "stages_ms_per_clip": stage_profile(forms, args.batch_size),
    }
    one = {form: runs[0]["clips_per_s_per_worker"] for form, runs in figures["loader"].items()}
    figures["ratio_builder_vs_on_the_fly_1_worker"] = one["builder"] / one["on_the_fly"]
    print(json.dumps(figures, indent=2))
    for form, runs in figures["loader"].items():
        for run in runs:
            print(f"{form:>16}: {run['workers']} worker(s): {run['clips_per_s']:.0f} clips/s, "
                  f"{run['clips_per_s_per_worker']:.0f} per worker")  # fmt: skip
    print(f"builder / on-the-fly, 1 worker: {figures['ratio_builder_vs_on_the_fly_1_worker']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
