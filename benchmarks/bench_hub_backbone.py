"""The "hub" backbone's overhead against the bare transformers model: the same encoder object, the same input.

    python benchmarks/bench_hub_backbone.py [--families wav2vec2 wavlm whisper] [--comparisons ...] [--batch 2]
        [--seconds 10] [--rounds 7] [--repeats 3] [--threads N] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--json out.json]

For each family, a base-size model built from its config with random weights (no download): wav2vec2-base,
WavLM base (microsoft/wavlm-base-plus's sizes), Whisper base's encoder. Three measurements, each a ratio in one run:

- wrapper: `HubBackbone(features, mask)` (the family's encoder, the attention mask as its config asks, and the masked
  mean over time) against the bare `AutoModel` (Whisper: `WhisperEncoder`) on the same input tensor and mask, its
  last hidden state the output. The backbone wraps that very model object, so the weights are the same.
- with the front-end: SPA's in-model front-end + the wrapper from the waveform, against the same bare model on the
  features the front-end made (computed once, outside the timing); the front-end's cost is on SPA's side only.
- added work: what the wrapper does beyond the bare model (the frame mask from the lengths and the masked mean), run
  alone on the bare model's output, against the bare model: the overhead is 1 + this ratio. On a loaded machine the
  two ratios above carry the noise of two long runs; this one the noise of one short operation.

Forward (inference mode) and forward + backward (train mode with dropout, LayerDrop and SpecAugment off, so that
both sides do the same work; loss = the sum of the output). The sides alternate within each round (their order
flips every round), each timed as the median of `--repeats` calls after a warm-up; the ratio wrapper / bare of each
round is reported as its median and spread (min - max) over the rounds, with the machine's load average. Two clocks:
wall time, and the process's CPU time, which on a shared machine (`--threads 1`) counts the work done rather than the
time other jobs took the core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

import torch
from transformers import AutoConfig, AutoModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from modeling_spa.backbone_hub import HubBackbone
from modeling_spa.backbones import backbone_spec
from modeling_spa.frontends import build_frontend

RATE = 16000
COMPARISONS = ["wrapper", "with the front-end", "added work"]
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
              "layerdrop": 0.0, "mask_time_prob": 0.0, "dropout": 0.0, "encoder_layerdrop": 0.0}  # fmt: skip
# Base sizes: wav2vec2-base is the config's default; WavLM base(-plus) likewise; Whisper base's encoder.
FAMILIES = {
    "wav2vec2": {},
    "wavlm": {},
    "whisper": {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048},
}


def build(family: str, device: str) -> tuple[HubBackbone, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **FAMILIES[family], **NO_DROPOUT)
    bare = (WhisperEncoder(config) if family == "whisper" else AutoModel.from_config(config)).to(device)
    wrapper = HubBackbone(config, encoder=bare)
    frontend = build_frontend(backbone_spec("hub").frontend_settings(config)).to(device)
    return wrapper, bare, frontend


def inputs(batch: int, seconds: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise clips, the last one 30 % shorter (padding and masks at work)."""
    generator = torch.Generator().manual_seed(0)
    samples = round(seconds * RATE)
    waves = 0.1 * torch.randn(batch, samples, generator=generator)
    mask = torch.ones(batch, samples, dtype=torch.long)
    mask[-1, round(0.7 * samples) :] = 0
    return (waves * mask).to(device), mask.to(device)


def timed(step, repeats: int, device: str) -> dict[str, float]:
    """Median wall and CPU seconds of `step()` over `repeats` calls, after one warm-up call."""
    step()
    times = {"wall": [], "cpu": []}
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times["wall"].append(time.perf_counter() - wall)
        times["cpu"].append(time.process_time() - cpu)
    return {clock: statistics.median(values) for clock, values in times.items()}


def steps(wrapper: HubBackbone, bare: torch.nn.Module, frontend, waves, mask, dtype: torch.dtype) -> dict:
    """name -> (our step, the bare model's step), each a function of `train` (forward + backward) or not."""
    features, frames = frontend(waves, mask)
    features = features.to(dtype)
    bare_inputs = {wrapper.input_name: features.transpose(1, 2) if wrapper.is_whisper else features}
    if wrapper.masks_encoder:
        bare_inputs["attention_mask"] = frames.long()
    autocast = torch.autocast(waves.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    def run(forward, train: bool) -> None:
        if not train:
            with torch.inference_mode(), autocast:
                forward()
            return
        with autocast:
            loss = forward().float().sum()
        loss.backward()
        bare.zero_grad(set_to_none=True)
        wrapper.zero_grad(set_to_none=True)

    def from_waveform():
        values, masks = frontend(waves, mask)
        return wrapper(values.to(dtype), masks).pooler_output

    def ours_wrapper():
        return wrapper(features, frames).pooler_output

    def theirs():
        return bare(**bare_inputs).last_hidden_state

    with torch.no_grad(), autocast:
        hidden = theirs()
    leaf = hidden.detach().requires_grad_()

    def added():
        source = leaf if torch.is_grad_enabled() else hidden
        return wrapper.pool(source, wrapper.frame_mask(frames, source.shape[1], source.device))

    return {
        "wrapper": (lambda train: run(ours_wrapper, train), lambda train: run(theirs, train)),
        "with the front-end": (lambda train: run(from_waveform, train), lambda train: run(theirs, train)),
        "added work": (lambda train: run(added, train), lambda train: run(theirs, train)),
    }


def measure(family: str, args) -> dict:
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    wrapper, bare, frontend = build(family, args.device)
    waves, mask = inputs(args.batch, args.seconds, args.device)
    results = {}
    for comparison, (ours, theirs) in steps(wrapper, bare, frontend, waves, mask, dtype).items():
        if comparison not in args.comparisons:
            continue
        for train in (False, True):
            wrapper.train(train)
            rounds = []
            for round_ in range(args.rounds):
                order = (("ours", ours), ("bare", theirs)) if round_ % 2 == 0 else (("bare", theirs), ("ours", ours))
                rounds.append({side: timed(partial(step, train), args.repeats, args.device) for side, step in order})
            key = f"{comparison}, {'forward + backward' if train else 'forward'}"
            results[key] = {clock: summary(rounds, clock) for clock in ("wall", "cpu")} | {"rounds": args.rounds}
            for clock in ("wall", "cpu"):
                print(f"{family:10s} {key:40s} {clock:4s} {line(results[key][clock])}", flush=True)
    return results


def line(result: dict) -> str:
    return (f"ours {result['ours_s'] * 1e3:8.1f} ms  bare {result['bare_s'] * 1e3:8.1f} ms  ratio "
            f"{result['ratio_median']:.4f} ({result['ratio_min']:.4f} - {result['ratio_max']:.4f})")  # fmt: skip


def summary(rounds: list[dict], clock: str) -> dict:
    """Median times of both sides and the median and range of the per-round ratio ours / bare, on one clock."""
    ratios = [r["ours"][clock] / r["bare"][clock] for r in rounds]
    return {
        "ours_s": statistics.median(r["ours"][clock] for r in rounds),
        "bare_s": statistics.median(r["bare"][clock] for r in rounds),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (Whisper pads every clip to 30 s)")
    parser.add_argument("--comparisons", nargs="+", default=COMPARISONS, choices=COMPARISONS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 on a shared machine")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    report = {
        "settings": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        },  # fmt: skip
        "results": {family: measure(family, args) for family in args.families},
    }
    report["machine"]["load_average_1_5_15_before"] = load_before
    report["machine"]["load_average_1_5_15_after"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before}, after {report['machine']['load_average_1_5_15_after']}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
