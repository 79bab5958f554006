"""The "hub" backbone's overhead against the bare transformers model: the same encoder object, the same input.

    python benchmarks/bench_hub_backbone.py [--families wav2vec2 wavlm whisper] [--comparisons ...] [--batch 2]
        [--seconds 10] [--pairs 15] [--clock wall|cpu] [--threads N] [--device cpu|cuda] [--dtype float32|bfloat16]
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
both sides do the same work; loss = the sum of the output). Both sides live in this one process and are stepped in
pairs whose order alternates (`benchmarks/paired.py`, as the other two-arm benchmarks): the ratio wrapper / bare is the
median of the `--pairs` pair ratios with their interquartile range, and the machine's load average before and after.
`--clock cpu` with `--threads 1` counts the work rather than the time other jobs took the cores (see paired.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from modeling_spa.backbone_hub import HubBackbone
from modeling_spa.backbones import backbone_spec
from modeling_spa.frontends import build_frontend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired import describe, machine_load, pair_ratios, summarize, time_pairs  # noqa: E402

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
            wrapper.train(train)  # the bare model is the wrapper's encoder: one mode for both
            arms = {"ours": partial(ours, train), "bare": partial(theirs, train)}
            times = time_pairs(arms, args.pairs, args.device, reverse=False, clock=args.clock)
            ratio = summarize([pair_ratios(times, "ours", "bare")])
            key = f"{comparison}, {'forward + backward' if train else 'forward'}"
            results[key] = {"ratio": ratio} | {f"{side}_s": statistics.median(times[side]) for side in arms}
            print(f"{family:10s} {key:40s} ours {results[key]['ours_s'] * 1e3:8.1f} ms  bare "
                  f"{results[key]['bare_s'] * 1e3:8.1f} ms  ratio {describe(ratio)}", flush=True)  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (Whisper pads every clip to 30 s)")
    parser.add_argument("--comparisons", nargs="+", default=COMPARISONS, choices=COMPARISONS)
    parser.add_argument("--pairs", type=int, default=15, help="timed pairs of steps per measurement")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="see benchmarks/paired.py")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 on a shared machine")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = machine_load()
    report = {
        "settings": vars(args),
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        },  # fmt: skip
        "results": {family: measure(family, args) for family in args.families},
    }
    report["machine"] |= {"before": load_before, "after": machine_load()}
    print(f"before: {load_before}; after: {report['machine']['after']}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
