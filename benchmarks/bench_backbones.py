"""Speed and memory of each backbone port against its peer's own code: same weights, same audio.

    python benchmarks/bench_backbones.py [--families passt cnn14 ...] [--batch 2] [--runs 3] [--pairs 5]
        [--device cpu|cuda] [--dtype float32|bfloat16] [--threads N] [--clock wall|cpu] [--profile 25] [--json out.json]

Each family is a module `benchmarks/peers/<family>.py` with `DESCRIPTION` and
`build(impl: "ours" | "peer", batch_size: int, device: str) -> (module, inputs)`: the full-size model (random
weights, seeded, equal for both implementations) and an input batch made from the same audio. What each pair
includes (front-end or not) is said in its DESCRIPTION; both sides always do the same work.

Time: each run is one process holding both implementations, timed in pairs whose order alternates
(`benchmarks/paired.py`): forward (eval, inference mode), then forward + backward (train mode). A ratio ours / peer
(below 1: ours is faster) is the median over all pairs of `--runs` runs, with the interquartile range of the pairs and
each run's median: a claim of parity says how wide the noise is.
Memory: peak (ru_maxrss on the CPU, max_memory_allocated on a GPU) of each implementation alone in its own process,
after a forward and a forward + backward.
`--profile N`: no timing; the N operators with the most self time in a training step, ours beside the peer's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
PEERS = BENCHMARKS / "peers"
sys.path[:0] = [str(BENCHMARKS), str(PEERS)]

from paired import describe, machine_load, pair_ratios, profile_pairs, summarize, time_pairs  # noqa: E402

IMPLS = ("ours", "peer")


def first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(v for v in values if isinstance(v, torch.Tensor))


def steps(family: str, impl: str, batch: int, device: str, dtype: str) -> dict:
    """The forward and the forward + backward of one implementation, as closures (each sets its module's mode)."""
    module, inputs = importlib.import_module(family).build(impl, batch, device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def forward():
        module.eval()
        with torch.inference_mode(), autocast:
            first_tensor(module(*inputs))

    def forward_backward():
        module.train()
        with autocast:
            loss = first_tensor(module(*inputs)).float().sum()
        loss.backward()
        module.zero_grad(set_to_none=True)

    return {"forward": forward, "train_step": forward_backward}


def time_child(args: argparse.Namespace, family: str) -> dict:
    sides = {impl: steps(family, impl, args.batch, args.device, args.dtype) for impl in IMPLS}
    result = {}
    for kind in ("forward", "train_step"):
        arms = {impl: sides[impl][kind] for impl in IMPLS}
        times = time_pairs(arms, args.pairs, args.device, args.reverse, args.clock)
        result[kind] = {"ratios": pair_ratios(times, "ours", "peer"), "seconds": times}
    return result


def memory_child(args: argparse.Namespace, family: str, impl: str) -> dict:
    side = steps(family, impl, args.batch, args.device, args.dtype)
    side["forward"]()
    side["train_step"]()
    if args.device == "cuda":
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def profile_child(args: argparse.Namespace, family: str) -> None:
    """Self time per operator of a training step, ours beside the peer's, averaged over `--pairs` alternating steps
    of each (the load then falls on both sides alike); the `--profile` operators with the most time on either side."""
    sides = {impl: steps(family, impl, args.batch, args.device, args.dtype)["train_step"] for impl in IMPLS}
    totals = profile_pairs(sides, args.pairs, args.device)
    keys = sorted(set(totals["ours"]) | set(totals["peer"]), key=lambda k: -max(t[k][0] for t in totals.values()))
    step_ms = {impl: sum(v[0] for v in totals[impl].values()) for impl in IMPLS}
    print(
        f"== {family}: self time per training step (batch {args.batch}, {args.threads} threads, mean of {args.pairs})"
    )
    print(f"{'total':60s} ours {step_ms['ours']:9.1f} ms         peer {step_ms['peer']:9.1f} ms")
    for key in keys[: args.profile]:
        (ours_ms, ours_calls), (peer_ms, peer_calls) = totals["ours"][key], totals["peer"][key]
        print(f"{key[:60]:60s} ours {ours_ms:9.1f} ms ({ours_calls:4.0f})  peer {peer_ms:9.1f} ms ({peer_calls:4.0f})")


def run_child(args: argparse.Namespace, *child: str, reverse: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", *child, "--batch", str(args.batch), "--pairs", str(args.pairs),
               "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads),
               "--clock", args.clock]  # fmt: skip
    done = subprocess.run(command + (["--reverse"] if reverse else []), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(child)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_family(args: argparse.Namespace, family: str) -> dict:
    runs = [run_child(args, "time", family, reverse=bool(run % 2)) for run in range(args.runs)]
    row = {"description": importlib.import_module(family).DESCRIPTION}
    for kind in ("forward", "train_step"):
        row[f"{kind}_ratio"] = summarize([run[kind]["ratios"] for run in runs])
        for impl in IMPLS:
            seconds = [s for run in runs for s in run[kind]["seconds"][impl]]
            row.setdefault(impl, {})[f"{kind}_s"] = statistics.median(seconds)
    for impl in IMPLS:
        row[impl]["peak_mb"] = run_child(args, "memory", family, impl)["peak_mb"]
    row["memory_ratio"] = row["ours"]["peak_mb"] / row["peer"]["peak_mb"]
    return row


def report(family: str, row: dict) -> None:
    ours, peer = row["ours"], row["peer"]
    print(f"{family:8s} {row['description']}")
    for kind, label in (("forward", "forward"), ("train_step", "fwd+bwd")):
        print(f"  {label:8s} ours {ours[f'{kind}_s'] * 1e3:8.1f} ms  peer {peer[f'{kind}_s'] * 1e3:8.1f} ms  "
              f"(medians of all steps)  ratio {describe(row[f'{kind}_ratio'])}")  # fmt: skip
    print(f"  peak memory  ours {ours['peak_mb']:8.0f} MB  peer {peer['peak_mb']:8.0f} MB  "
          f"ratio {row['memory_ratio']:.3f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = sorted(p.stem for p in PEERS.glob("*.py") if not p.stem.startswith("_"))
    parser.add_argument("--families", nargs="+", default=available, choices=available)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="processes, each timing both sides in alternating pairs")
    parser.add_argument("--pairs", type=int, default=5, help="pairs of steps per run, for each of the two kinds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (CPU)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="see benchmarks/paired.py")
    parser.add_argument("--profile", type=int, help="print the top N operators of a training step; no timing")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        mode, family, *impl = args.child
        result = time_child(args, family) if mode == "time" else memory_child(args, family, *impl)
        print(json.dumps(result))
        return
    if args.profile:
        for family in args.families:
            profile_child(args, family)
        return
    load_before, results = machine_load(), {}
    for family in args.families:
        results[family] = measure_family(args, family)
        report(family, results[family])
    load_after = machine_load()
    print(f"machine: {load_before} before, {load_after} after")
    setting = {"batch": args.batch, "runs": args.runs, "pairs": args.pairs, "device": args.device, "dtype": args.dtype,
               "threads": args.threads, "clock": args.clock, "load_before": load_before,
               "load_after": load_after}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": setting, "results": results}, indent=2))


if __name__ == "__main__":
    main()
