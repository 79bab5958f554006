"""Cost of the SPA objective: training-step time and peak memory with α > 0 against α = 0, same backbone and batch.

    python benchmarks/bench_spa_overhead.py [--backbone demo_cnn|passt|cnn14|ast-small] [--runs 3] [--pairs 20]
        [--geometry_weight W] [--threads N] [--clock wall|cpu] [--device cpu|cuda] [--json out.json] [--profile 20]

Time: each run is one process holding both models (the same weights; α = 0 and α = `--alpha`, the objective otherwise
the config's default unless `--geometry_weight` sets the label-geometry term's weight), stepped in pairs of training
steps (forward, backward, AdamW) whose order alternates (`benchmarks/paired.py`); the ratio is the median over all
pairs of all runs, with the interquartile range of the pairs and each run's median. A 5 % difference is below the
noise of single runs on a shared 2-core machine; the pairs see the same load.
Memory: peak resident set on the CPU (`max_memory_allocated` on a GPU) of each α alone, in its own process
(`--memory_runs` each, alternating; 0 skips them).
`--profile N`: no timing; self time per operator of a step with α = 0 and α > 0 (the mean of `--pairs` alternating
steps each, torch.profiler), the N operators whose time differs most: what SPA's own work costs, apart from the swings
of the backbone's operators, which do the same work in both arms.
Classes and text size are the paper's setting: 527 AudioSet labels, 768-dim (BERT base) label text; label-text values
and distances do not change the cost, so they are random here. No text encoder is resident.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired import describe, machine_load, pair_ratios, profile_pairs, summarize, time_pairs  # noqa: E402

SETTINGS = {
    # the demo CNN: batch 32 of 2-s clips at 16 kHz
    "demo_cnn": {
        "backbone": "demo_cnn",
        "audio_config": {"hidden_sizes": [8, 16, 32, 64], "num_mel_bins": 64},
        "frontend": "tiny",
        "batch": 32,
        "seconds": 2.0,
    },
    # full-size PaSST-S (the paper's default backbone), 10-s clips at 32 kHz, patchout as in its AudioSet training
    "passt": {"backbone": "passt", "audio_config": {}, "batch": 4, "seconds": 10.0},
    # full-size PANNs CNN14, 10-s clips at 32 kHz
    "cnn14": {"backbone": "cnn14", "audio_config": {}, "batch": 4, "seconds": 10.0},
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


def peak_mb(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_step(setting: str, alpha: float, geometry_weight: float | None, device: str):
    """A closure that runs one training step of a seeded model (the same weights for every α)."""
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
        **({} if geometry_weight is None else {"spa_geometry_weight": geometry_weight}),
    )
    model = SPAForAudioClassification(config).to(device).train()
    model.set_label_text(torch.randn(527, 768))
    hops = torch.randint(1, 22, (527, 527))
    model.label_distances.copy_(torch.triu(hops, 1) + torch.triu(hops, 1).T)  # symmetric, zero diagonal
    # fused, as the recipe's `training.optimization.make_optimizer`
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    rate = config.frontend["sampling_rate"]
    data = torch.Generator().manual_seed(1)
    waves = (torch.randn(spec["batch"], int(spec["seconds"] * rate), generator=data) * 0.1).to(device)
    labels = (torch.rand(spec["batch"], 527, generator=data) < 0.01).float()
    labels[:, 0] = 1
    labels = labels.to(device)

    def step() -> None:
        model(waves, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def child(args: argparse.Namespace) -> dict:
    if args.child == "time":
        arms = {a: training_step(args.backbone, a, args.geometry_weight, args.device) for a in (0.0, args.alpha)}
        times = time_pairs(arms, args.pairs, args.device, reverse=args.reverse, clock=args.clock)
        return {"ratios": pair_ratios(times, args.alpha, 0.0), "step_s": {str(a): t for a, t in times.items()}}
    alpha = float(args.child)
    step = training_step(args.backbone, alpha, args.geometry_weight, args.device)
    for _ in range(args.memory_steps):
        step()
    return {"peak_mb": peak_mb(args.device)}


def profile_child(args: argparse.Namespace) -> None:
    arms = {a: training_step(args.backbone, a, args.geometry_weight, args.device) for a in (0.0, args.alpha)}
    totals = profile_pairs(arms, args.pairs, args.device)
    base, spa = totals[0.0], totals[args.alpha]
    keys = sorted(set(base) | set(spa), key=lambda k: -abs(spa[k][0] - base[k][0]))
    print(f"== {args.backbone}: self time per training step, mean of {args.pairs} steps of each α")
    print(f"{'total':60s} α=0 {sum(v[0] for v in base.values()):9.1f} ms   α={args.alpha} "
          f"{sum(v[0] for v in spa.values()):9.1f} ms")  # fmt: skip
    for key in keys[: args.profile]:
        print(f"{key[:60]:60s} α=0 {base[key][0]:9.1f} ms   α={args.alpha} {spa[key][0]:9.1f} ms   "
              f"difference {spa[key][0] - base[key][0]:+8.1f} ms")  # fmt: skip


def run_child(args: argparse.Namespace, mode: str, reverse: bool = False) -> dict:
    command = [sys.executable, __file__, "--backbone", args.backbone, "--device", args.device, "--alpha",
               str(args.alpha), "--pairs", str(args.pairs), "--memory_steps", str(args.memory_steps),
               "--child", mode]  # fmt: skip
    if args.geometry_weight is not None:
        command += ["--geometry_weight", str(args.geometry_weight)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    command += ["--clock", args.clock]
    if reverse:
        command.append("--reverse")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(SETTINGS), default="demo_cnn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3, help="processes, each timing both α in alternating pairs")
    parser.add_argument("--pairs", type=int, default=20, help="pairs of training steps per run")
    parser.add_argument("--memory_runs", type=int, default=1, help="processes per α for peak memory (0: none)")
    parser.add_argument("--memory_steps", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--geometry_weight", type=float, help="spa_geometry_weight (default: the config's)")
    parser.add_argument("--threads", type=int, help="torch threads in each process (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="see benchmarks/paired.py")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--profile", type=int, help="print the N operators whose time α changes most; no timing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None or args.profile:  # the modes that step models in this process
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.profile:
            profile_child(args)
        else:
            print(json.dumps(child(args)))
        return
    load_before = machine_load()
    timed = [run_child(args, "time", reverse=bool(run % 2)) for run in range(args.runs)]
    memory = {0.0: [], args.alpha: []}
    for run in range(args.memory_runs):
        for alpha in list(memory)[:: -1 if run % 2 else 1]:
            memory[alpha].append(run_child(args, str(alpha))["peak_mb"])
    ratio = summarize([run["ratios"] for run in timed])
    step_s = {a: statistics.median(t for run in timed for t in run["step_s"][str(a)]) for a in (0.0, args.alpha)}
    figures = {
        "setting": args.backbone,
        "device": args.device,
        "alpha": args.alpha,
        "geometry_weight": args.geometry_weight,
        "batch": SETTINGS[args.backbone]["batch"],
        "threads": args.threads,
        "clock": args.clock,
        "step_time_ratio": ratio,
        "median_step_s": {str(a): s for a, s in step_s.items()},
        "peak_mb": {str(a): statistics.median(m) for a, m in memory.items() if m},
        "load_before": load_before,
        "load_after": machine_load(),
    }
    print(f"{args.backbone} on {args.device}, {figures['batch']} clips per step, 527 classes")
    print(f"  step time ({args.clock} clock, {args.threads or 'default'} threads)   α=0: {step_s[0.0]:.3f} s   "
          f"α={args.alpha}: {step_s[args.alpha]:.3f} s (medians of all steps)")  # fmt: skip
    print(f"  step-time ratio α={args.alpha} / α=0, paired: {describe(ratio)}")
    if args.memory_runs:
        base, spa = (statistics.median(memory[a]) for a in (0.0, args.alpha))
        print(f"  peak memory α=0: {base:.0f} MB   α={args.alpha}: {spa:.0f} MB   ratio {spa / base:.3f}")
    print(f"  machine: {load_before} before, {figures['load_after']} after")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
