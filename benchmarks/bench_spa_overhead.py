"""Cost of the SPA objective: training-step time and peak memory with α > 0 against α = 0, same backbone and batch.

    python benchmarks/bench_spa_overhead.py [--backbone demo_cnn|ast-small] [--device cpu|cuda] [--repeats 3]

Each (α, repeat) runs in a fresh subprocess, alternating α, so that peak memory (resident set on the CPU,
`max_memory_allocated` on a GPU) is measured cleanly; times are the median step of each run, then the median
over runs. Classes and text size are the paper's setting: 527 AudioSet labels, 768-dim (BERT base) label text;
label-text values and distances do not change the cost, so they are random here. No text encoder is resident.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SETTINGS = {
    # the demo CNN: batch 32 of 2-s clips at 16 kHz
    "demo_cnn": {
        "backbone": "demo_cnn",
        "audio_config": {"hidden_sizes": [8, 16, 32, 64], "num_mel_bins": 64},
        "frontend": "tiny",
        "batch": 32,
        "seconds": 2.0,
    },
    # a 6-layer, 384-wide AST on full 10-s, 1024-frame inputs
    "ast-small": {
        "backbone": "ast",
        "audio_config": {
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "intermediate_size": 1536,
        },
        "batch": 4,
        "seconds": 10.24,
    },
}


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(setting: str, alpha: float, steps: int, device: str) -> dict:
    import torch

    from modeling_spa import SPAConfig, SPAForAudioClassification
    from modeling_spa.frontend import frontend_preset

    spec = SETTINGS[setting]
    torch.manual_seed(0)
    config = SPAConfig(
        backbone=spec["backbone"],
        audio_config=spec["audio_config"],
        label_mids=[f"/m/{i}" for i in range(527)],
        text_hidden_size=768,
        projection_dim=512,
        spa_alpha=alpha,
        **({"frontend": frontend_preset(spec["frontend"])} if "frontend" in spec else {}),
    )
    model = SPAForAudioClassification(config).to(device)
    model.label_text_embeds.normal_()
    hops = torch.randint(1, 22, (527, 527))
    model.label_distances.copy_(torch.triu(hops, 1) + torch.triu(hops, 1).T)  # symmetric, zero diagonal
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rate = config.frontend["sampling_rate"]
    waves = torch.randn(spec["batch"], int(spec["seconds"] * rate), device=device) * 0.1
    labels = (torch.rand(spec["batch"], 527, device=device) < 0.01).float()
    labels[:, 0] = 1
    start_rss = peak_rss_mb()
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        model(waves, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
    return {"step_s": statistics.median(times[1:]), "peak_mb": peak, "rss_before_steps_mb": start_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(SETTINGS), default="demo_cnn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.backbone, args.child, args.steps, args.device)))
        return

    runs = {0.0: [], args.alpha: []}
    for _ in range(args.repeats):
        for alpha in runs:
            command = [
                sys.executable,
                __file__,
                "--backbone",
                args.backbone,
                "--device",
                args.device,
                "--steps",
                str(args.steps),
                "--child",
                str(alpha),
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[alpha].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base, spa = (
        {k: statistics.median(r[k] for r in runs[a]) for k in ("step_s", "peak_mb")} for a in (0.0, args.alpha)
    )
    figures = {
        "setting": args.backbone,
        "device": args.device,
        **{f"baseline_{k}": v for k, v in base.items()},
        **{f"spa_{k}": v for k, v in spa.items()},
        "step_time_ratio": spa["step_s"] / base["step_s"],
        "peak_memory_ratio": spa["peak_mb"] / base["peak_mb"],
    }
    print(f"{args.backbone} on {args.device}, {SETTINGS[args.backbone]['batch']} clips per step, 527 classes")
    print(
        f"  step time  α=0: {base['step_s']:.3f} s   α={args.alpha}: {spa['step_s']:.3f} s   "
        f"ratio {figures['step_time_ratio']:.3f}"
    )
    print(
        f"  peak memory α=0: {base['peak_mb']:.0f} MB   α={args.alpha}: {spa['peak_mb']:.0f} MB   "
        f"ratio {figures['peak_memory_ratio']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
