"""Speed and memory of each backbone port against its peer's own code: same weights, same audio, one run.

    python benchmarks/bench_backbones.py [--families passt cnn14 ...] [--batch 8] [--repeats 5] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--json out.json]

Each family is a module `benchmarks/peers/<family>.py` with `DESCRIPTION` and
`build(impl: "ours" | "peer", batch_size: int, device: str) -> (module, inputs)`: the full-size model (random
weights, seeded, equal for both implementations) and an input batch made from the same audio. What each pair
includes (front-end or not) is said in its DESCRIPTION; both sides always do the same work.

Every (family, implementation) is measured in its own process, so peak memory (ru_maxrss on the CPU,
max_memory_allocated on a GPU) is its own: forward (inference mode), forward + backward (train mode), clips/s of
the forward. The two implementations alternate for `--rounds` rounds and each keeps its best round, so that load
from elsewhere on a shared machine does not land on one side only. Reported as ratios ours / peer (time: below 1 is
faster; clips/s: above 1 is faster).
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

PEERS = Path(__file__).resolve().parent / "peers"


def first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(v for v in values if isinstance(v, torch.Tensor))


def timed(step, repeats: int, device: str) -> float:
    """Median seconds of `step()` over `repeats` runs, after one warm-up run."""
    step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(family: str, impl: str, batch: int, repeats: int, device: str, dtype: str) -> dict:
    sys.path.insert(0, str(PEERS))
    module, inputs = importlib.import_module(family).build(impl, batch, device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def forward():
        with torch.inference_mode(), autocast:
            first_tensor(module(*inputs))

    def forward_backward():
        with autocast:
            loss = first_tensor(module(*inputs)).float().sum()
        loss.backward()
        module.zero_grad(set_to_none=True)

    module.eval()
    forward_s = timed(forward, repeats, device)
    module.train()
    train_s = timed(forward_backward, repeats, device)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"forward_s": forward_s, "train_step_s": train_s, "clips_per_s": batch / forward_s, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = sorted(p.stem for p in PEERS.glob("*.py") if not p.stem.startswith("_"))
    parser.add_argument("--families", nargs="+", default=available, choices=available)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; each side keeps its best")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs=2, metavar=("FAMILY", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.batch, args.repeats, args.device, args.dtype)))
        return
    results = {}
    for family in args.families:
        sys.path.insert(0, str(PEERS))
        description = importlib.import_module(family).DESCRIPTION
        row = {"description": description}
        for _ in range(args.rounds):
            for impl in ("ours", "peer"):
                command = [sys.executable, __file__, "--child", family, impl, "--batch", str(args.batch),
                           "--repeats", str(args.repeats), "--device", args.device, "--dtype", args.dtype]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{family}/{impl} failed:\n{done.stderr[-3000:]}")
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                best = row.get(impl, measured)
                row[impl] = {key: min(best[key], measured[key]) for key in ("forward_s", "train_step_s", "peak_mb")}
                row[impl]["clips_per_s"] = args.batch / row[impl]["forward_s"]
        row["forward_ratio"] = row["ours"]["forward_s"] / row["peer"]["forward_s"]
        row["train_step_ratio"] = row["ours"]["train_step_s"] / row["peer"]["train_step_s"]
        row["memory_ratio"] = row["ours"]["peak_mb"] / row["peer"]["peak_mb"]
        results[family] = row
        ours, peer = row["ours"], row["peer"]
        print(
            f"{family:8s} {description}\n"
            f"  forward      ours {ours['forward_s'] * 1e3:8.1f} ms  peer {peer['forward_s'] * 1e3:8.1f} ms  "
            f"ratio {row['forward_ratio']:.3f}   "
            f"clips/s ours {ours['clips_per_s']:.1f} peer {peer['clips_per_s']:.1f}\n"
            f"  fwd+bwd      ours {ours['train_step_s'] * 1e3:8.1f} ms  peer {peer['train_step_s'] * 1e3:8.1f} ms  "
            f"ratio {row['train_step_ratio']:.3f}\n"
            f"  peak memory  ours {ours['peak_mb']:8.0f} MB  peer {peer['peak_mb']:8.0f} MB  "
            f"ratio {row['memory_ratio']:.3f}",
            flush=True,
        )
    setting = {"batch": args.batch, "repeats": args.repeats, "rounds": args.rounds, "device": args.device,
               "dtype": args.dtype, "threads": torch.get_num_threads()}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": setting, "results": results}, indent=2))


if __name__ == "__main__":
    main()
