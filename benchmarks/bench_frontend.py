"""In-model log-mel front-end against transformers' ASTFeatureExtractor on the same 10 s clips, in one run.

    python benchmarks/bench_frontend.py [--clips 32] [--repeats 5] [--device cpu|cuda] [--json PATH]

Both compute the AST features (16 kHz, 128-band Kaldi fbank, 1024 frames, normalised). ASTFeatureExtractor runs
numpy clip by clip on the CPU (without torchaudio, as here); the front-end takes the whole batch as one tensor.
Times are the best of `--repeats` after a warm-up; the two outputs are compared as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
import torch
from transformers import ASTFeatureExtractor

from modeling_spa.frontend import LogMelFrontend, frontend_preset


def clips_10s(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(160000) / 16000
    tones = np.sin(2 * np.pi * rng.uniform(100, 6000, (count, 1)) * t)
    return (0.1 * rng.standard_normal((count, t.size)) + 0.3 * tones).astype(np.float32)


def best_time(fn, repeats: int, synchronize=lambda: None) -> tuple[float, object]:
    out = fn()  # warm-up: allocator, FFT plans, CUDA kernels
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32, help="batch size (10 s clips)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="device of the in-model front-end (cpu, cuda)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    waveforms = clips_10s(args.clips)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AST's recipe has an empty mel band; transformers warns about it
        extractor = ASTFeatureExtractor()
    clip_list = list(waveforms)
    cpu_s, reference = best_time(
        lambda: extractor(clip_list, sampling_rate=16000, return_tensors="np")["input_values"], args.repeats
    )

    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    frontend = LogMelFrontend(**frontend_preset("ast")).to(device)
    batch = torch.from_numpy(waveforms)
    mask = torch.ones(batch.shape, dtype=torch.int32)

    @torch.inference_mode()
    def run():
        # Host-to-device copy included: the batch comes from a CPU DataLoader.
        features, _ = frontend(batch.to(device, non_blocking=True), mask.to(device, non_blocking=True))
        return features

    model_s, features = best_time(run, args.repeats, synchronize)
    max_abs_diff = float(np.abs(features.cpu().numpy() - reference).max())

    figures = {
        "clips": args.clips,
        "clip_seconds": 10.0,
        "repeats": args.repeats,
        "ast_feature_extractor_ms_per_clip": 1000 * cpu_s / args.clips,
        "frontend_device": str(device),
        "frontend_ms_per_clip": 1000 * model_s / args.clips,
        "frontend_clips_per_s": args.clips / model_s,
        "speedup": cpu_s / model_s,
        "max_abs_diff": max_abs_diff,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
    }
    print(f"ASTFeatureExtractor (numpy, per clip, CPU): {figures['ast_feature_extractor_ms_per_clip']:.2f} ms/clip")
    print(
        f"LogMelFrontend 'ast' ({device}, batch {args.clips}): {figures['frontend_ms_per_clip']:.3f} ms/clip, "
        f"{figures['frontend_clips_per_s']:.0f} clips/s"
    )
    print(f"speed-up: {figures['speedup']:.1f}x   max |difference|: {max_abs_diff:.2e}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
