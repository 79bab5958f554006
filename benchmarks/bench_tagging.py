"""Tagging a collection: end-to-end throughput against the model's forward alone, the per-file loop and panns_inference.

    python benchmarks/bench_tagging.py [--repeats 3] [--workers N] [--batch-size 16] [--device cpu] [--json PATH]
    python benchmarks/bench_tagging.py --memory [--json PATH]      # peak memory on an hour-long file
    python benchmarks/bench_tagging.py --repeats 1 --scale 0.1       # a check that it runs (files a tenth as long)

Files: real recordings (the Debian packages' files, `make real-sounds`) joined into real-length files of 30 s to
2.5 min, written in several formats, rates and channel counts (MP3 44.1 kHz stereo, Ogg 48 kHz stereo, FLAC 22.05 kHz
mono, ...), once, into `--files` (default `outputs/bench_tagging`). Model: SPA with a full-size CNN14 (random weights:
speed does not depend on them), its front-end at 32 kHz, 10 s windows. Each repeat times, in turn (rotated so that
none always runs first), on the same files:
- `model alone`: the model's forward (`tagging.scoring.forward_windows`: pad, front-end, CNN14, heads) on the same
  windows already decoded, in batches of `--batch-size`: the limit of any pipeline;
- `pipeline`: `tagging.pipeline.tag_collection` (decoding workers, windows of many files batched together), the
  default workers unless `--workers`;
- `per-file loop`: `tagging.files.file_outputs` file after file, as spa-tag did before: decoding, resampling and the
  model take turns in one process, a batch never holds two files' windows;
- `panns_inference`: what a user of PANNs writes: `librosa.load(path, sr=32000, mono=True)` then
  `AudioTagging.inference(waveform[None])` per file (the whole file in one forward), same CNN14 architecture, random
  weights (written as a checkpoint file so that AudioTagging loads it instead of downloading).
Throughput is seconds of audio per second of wall time; ratios are taken within each repeat (the same moment's
load) and reported as median and range. The machine's load average is recorded before and after.

`--memory`: the peak RSS of the main process and of the decoding worker tagging one hour-long file (48 kHz stereo
FLAC, 1.4 GB as float32 decoded whole) against a one-minute file, each in a fresh process, with a small model (the
pipeline's memory does not depend on the model's size beyond its activations).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification  # noqa: E402
from modeling_spa.data import default_num_workers  # noqa: E402
from modeling_spa.data.audio_files import file_windows  # noqa: E402
from modeling_spa.files import cache_dir  # noqa: E402
from modeling_spa.frontend import frontend_preset  # noqa: E402
from modeling_spa.tagging.files import file_outputs  # noqa: E402
from modeling_spa.tagging.pipeline import tag_collection  # noqa: E402
from modeling_spa.tagging.scoring import forward_windows  # noqa: E402
from modeling_spa.tagging.sources import FileCollection  # noqa: E402
from modeling_spa.waveforms import mix_to_mono, resample  # noqa: E402
from modeling_spa.windowing import window_settings  # noqa: E402

REAL_PACKAGES = cache_dir() / "real_sounds" / "extracted"
CLASS_LABELS = REPO.parent / "shared" / "audioset" / "class_labels_indices.csv"
# (name, format, subtype, rate, channels, seconds): real-length files of mixed formats and rates.
FILES = [
    ("music_44k_stereo.mp3", "MP3", None, 44100, 2, 120),
    ("ambience_48k_stereo.ogg", "OGG", "VORBIS", 48000, 2, 90),
    ("mixed_22k_mono.flac", "FLAC", "PCM_16", 22050, 1, 150),
    ("speech_16k_mono.wav", "WAV", "PCM_16", 16000, 1, 60),
    ("effects_44k_stereo.flac", "FLAC", "PCM_16", 44100, 2, 75),
    ("loops_22k_mono.mp3", "MP3", None, 22050, 1, 45),
    ("sounds_32k_mono.ogg", "OGG", "VORBIS", 32000, 1, 100),
    ("phone_8k_mono.wav", "WAV", "PCM_16", 8000, 1, 30),
]


def real_recordings(rate: int) -> list[np.ndarray]:
    """Every decodable recording of the packages, mono at `rate`, in a fixed shuffled order."""
    if not REAL_PACKAGES.is_dir():
        sys.exit(f"no real recordings under {REAL_PACKAGES}: build them first (make real-sounds)")
    paths = sorted(p for p in REAL_PACKAGES.rglob("*") if p.suffix.lower() in (".wav", ".mp3", ".ogg", ".flac", ".oga"))
    sounds = []
    for path in paths:
        try:
            samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
        except soundfile.LibsndfileError:  # the packages' RIFF-wrapped Vorbis files
            continue
        sounds.append(resample(mix_to_mono(samples), file_rate, rate))
    order = np.random.default_rng(0).permutation(len(sounds))
    return [sounds[i] for i in order]


def joined(sounds: list[np.ndarray], start: int, samples: int) -> tuple[np.ndarray, int]:
    """Recordings from `start` on, joined with 0.2 s gaps until `samples` long (looping over the list)."""
    pieces, total, i = [], 0, start
    while total < samples:
        sound = sounds[i % len(sounds)]
        pieces += [sound, np.zeros(len(sound) // 50 + 1, dtype=np.float32)]
        total += len(pieces[-1]) + len(pieces[-2])
        i += 1
    return np.concatenate(pieces)[:samples], i


def write_sound(path: Path, audio: np.ndarray, rate: int, file_format: str, subtype: str | None) -> None:
    with soundfile.SoundFile(path, "w", rate, audio.shape[1], format=file_format, subtype=subtype) as sound:
        for start in range(0, len(audio), rate):  # 1 s pieces: one long Ogg Vorbis write crashes libsndfile 1.2.2
            sound.write(audio[start : start + rate])


def make_files(folder: Path, scale: float = 1.0) -> list[str]:
    """The benchmark's files (written once): real recordings joined, at each file's rate and channel count; `scale`
    multiplies their lengths (in a folder of their own)."""
    folder = folder if scale == 1.0 else folder / f"scale_{scale:g}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name, *_ in FILES]
    if all(path.exists() for path in paths):
        return [str(path) for path in paths]
    by_rate, position = {}, 0
    for (_, file_format, subtype, rate, channels, seconds), path in zip(FILES, paths, strict=True):
        if rate not in by_rate:
            by_rate[rate] = real_recordings(rate)
        sounds = by_rate[rate]
        columns = []
        for _ in range(channels):  # stereo: two different recordings, as two microphones never hear the same
            column, position = joined(sounds, position, round(seconds * scale * rate))
            columns.append(column)
        audio = np.stack(columns, axis=1)
        write_sound(path, 0.7 * audio / max(np.abs(audio).max(), 1e-6), rate, file_format, subtype)
        print(f"wrote {path} ({seconds * scale:g} s, {rate} Hz, {channels} channel(s))", file=sys.stderr)
    return [str(path) for path in paths]


def spa_cnn14(device: str) -> tuple[SPAForAudioClassification, SPAFeatureExtractor]:
    labels = {i: f"class {i}" for i in range(527)}
    config = SPAConfig(backbone="cnn14", frontend=frontend_preset("cnn14"), projection_dim=512, id2label=labels)
    torch.manual_seed(0)
    model = SPAForAudioClassification(config).to(device).eval()
    return model, SPAFeatureExtractor(sampling_rate=32000, max_length_s=10.0)


def panns_tagger(folder: Path, device: str):
    """panns_inference's AudioTagging with a full-size CNN14 of random weights, offline: its label CSV and a checkpoint
    file in a HOME of their own (it downloads both when they are missing: DESIGN.md section 8)."""
    home = folder / "panns_home"
    (home / "panns_data").mkdir(parents=True, exist_ok=True)
    shutil.copy(CLASS_LABELS, home / "panns_data" / "class_labels_indices.csv")
    os.environ["HOME"] = str(home)
    from panns_inference import AudioTagging
    from panns_inference.models import Cnn14

    cnn14 = Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527)
    checkpoint = home / "panns_data" / "Cnn14_random.pth"
    if not checkpoint.exists():
        torch.save({"model": cnn14.state_dict()}, checkpoint)  # 80 M parameters: 324 MB, over its 3e8-byte check
    return AudioTagging(model=cnn14, checkpoint_path=str(checkpoint), device=device)


def decoded_windows(paths: list[str], model, extractor) -> list[np.ndarray]:
    settings = window_settings(model.config)
    return [w for path in paths for w in file_windows(path, extractor.sampling_rate, settings.length, settings.hop)]


def run_model_alone(windows, model, extractor, batch_size: int) -> None:
    for start in range(0, len(windows), batch_size):
        forward_windows(model, extractor, windows[start : start + batch_size])


def run_pipeline(paths, model, extractor, batch_size: int, workers: int | None) -> None:
    for result in tag_collection(FileCollection(paths), model, extractor, batch_size=batch_size, num_workers=workers):
        assert result.error is None, result.error


def run_per_file(paths, model, extractor, batch_size: int) -> None:
    for path in paths:
        file_outputs(path, model, extractor, windows_per_batch=batch_size)


def run_panns(paths, tagger) -> None:
    import librosa

    for path in paths:
        waveform, _ = librosa.load(path, sr=32000, mono=True)
        tagger.inference(waveform[None, :])


def throughput(args) -> dict:
    paths = make_files(Path(args.files), args.scale)
    audio_s = sum(soundfile.info(p).duration for p in paths)
    model, extractor = spa_cnn14(args.device)
    windows = decoded_windows(paths, model, extractor)
    methods = {
        "model alone": lambda: run_model_alone(windows, model, extractor, args.batch_size),
        "pipeline": lambda: run_pipeline(paths, model, extractor, args.batch_size, args.workers),
        "per-file loop": lambda: run_per_file(paths, model, extractor, args.batch_size),
    }
    if not args.skip_panns:
        tagger = panns_tagger(Path(args.files), args.device)
        methods["panns_inference"] = lambda: run_panns(paths, tagger)
    forward_windows(model, extractor, windows[: args.batch_size])  # warm-up
    load_before = os.getloadavg()
    times = {name: [] for name in methods}
    names = list(methods)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            started = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - started)
            print(f"repeat {repeat}: {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    return report(times, audio_s, len(paths), len(windows), load_before, args)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def report(times: dict, audio_s: float, files: int, windows: int, load_before, args) -> dict:
    speed = {name: spread([audio_s / t for t in ts]) for name, ts in times.items()}
    limit = times["model alone"]
    ratios = {f"{name} / model alone": spread([lt / t for t, lt in zip(ts, limit, strict=True)])
              for name, ts in times.items() if name != "model alone"}  # fmt: skip
    for other in ("per-file loop", "panns_inference"):
        if other in times:
            pairs = zip(times["pipeline"], times[other], strict=True)
            ratios[f"pipeline / {other}"] = spread([o / p for p, o in pairs])
    return {
        "files": files, "scale": args.scale, "audio_s": audio_s, "windows": windows, "batch_size": args.batch_size,
        "workers": default_num_workers() if args.workers is None else args.workers,
        "torch_threads": torch.get_num_threads(), "device": args.device, "repeats": args.repeats,
        "audio_s_per_s": speed, "ratios": ratios, "seconds": times,
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "cores": os.cpu_count(),
        "machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Memory on an hour-long file


def memory(args) -> dict:
    folder = Path(args.files)
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for minutes in (1, 10, 60):
        path = folder / f"real_{minutes}min_48k_stereo.flac"
        if not path.exists():
            write_long(path, minutes * 60)
        command = [sys.executable, __file__, "--memory-child", str(path), "--workers", str(args.workers or 1)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[f"{minutes} min"] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{minutes} min: {results[f'{minutes} min']}", file=sys.stderr)
    results["decoded whole, float32 (MB)"] = 3600 * 48000 * 2 * 4 / 1e6
    results["load_average"] = os.getloadavg()
    return results


def write_long(path: Path, seconds: int) -> None:
    """Real recordings joined to `seconds` of 48 kHz stereo FLAC, written a minute at a time."""
    sounds = real_recordings(48000)
    position = 0
    with soundfile.SoundFile(path, "w", 48000, 2, format="FLAC", subtype="PCM_16") as sound:
        for _ in range(0, seconds, 60):
            left, position = joined(sounds, position, 60 * 48000)
            right, position = joined(sounds, position, 60 * 48000)
            audio = np.stack([left, right], axis=1)
            sound.write(0.7 * audio / max(np.abs(audio).max(), 1e-6))


def memory_child(path: str, workers: int) -> None:
    """Tags one file with a small model (10 s windows at 16 kHz) and prints the peak RSS of this process and of its
    decoding worker(s), in MB."""
    config = SPAConfig(backbone="demo_cnn", audio_config={"hidden_sizes": [16, 32], "num_mel_bins": 64},
                       frontend=frontend_preset("tiny"), projection_dim=64, window_length_s=10.0,
                       id2label={i: f"class {i}" for i in range(527)})  # fmt: skip
    model = SPAForAudioClassification(config).eval()
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=10.0)
    started = time.perf_counter()
    [result] = tag_collection(FileCollection([path]), model, extractor, num_workers=workers)
    elapsed = time.perf_counter() - started
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"audio_s": result.duration_s, "windows": len(result.window_starts), "seconds": elapsed,
                      "main_peak_rss_mb": self_mb, "worker_peak_rss_mb": children_mb}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default=str(REPO / "outputs" / "bench_tagging"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="the files' lengths times this (0.1: a quick check)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-panns", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.workers)
        return
    result = memory(args) if args.memory else throughput(args)
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
