"""OBCE's weights at AudioSet size: the dense (B, C, C) minimum (the library's) against gathering each clip's labels
(the implementation before it, which read the largest label count back to the host every step), eager and compiled.

    python benchmarks/bench_obce.py [--device cuda] [--batch 32 128] [--json out.json]

Labels: AudioSet-shaped (2.7 labels per clip over the 527 classes), mixed as mixup mixes them (soft labels). Peak memory
is the allocator's on CUDA and the profiler's on the CPU. Each figure is the median of --repeats calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from modeling_spa.losses import ontology_loss_weight
from modeling_spa.taxonomy import AudioSetOntology


def gathered_weight(labels: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """The previous implementation: (B, C, K) with K = the most labels on a clip, read on the host."""
    t = labels.float()
    g = distances.to(device=t.device, dtype=torch.float32)
    g = g / g.max().clamp_min(1)
    k = int((t != 0).sum(dim=1).max())
    values, index = t.abs().topk(k, dim=1)
    values = torch.gather(t, 1, index)
    scaled = values[:, None, :] * g.T[index].transpose(1, 2)
    nearest = torch.where(scaled == 0, torch.inf, scaled).amin(dim=-1)
    nearest = torch.where(torch.isinf(nearest), 0.0, nearest)
    row_max = nearest.amax(dim=1, keepdim=True)
    weight = torch.where(row_max > 0, nearest / row_max.clamp_min(torch.finfo(torch.float32).tiny), 1.0)
    weight = torch.where(t > 0, 1.0, weight)
    return weight / weight.mean()


def mixed_labels(batch: int, classes: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    hard = (torch.rand(batch, classes, generator=g) < 2.7 / classes).float()
    lam = torch.rand(batch, 1, generator=g).clamp_min(0.5)
    return (lam * hard + (1 - lam) * hard[torch.randperm(batch, generator=g)]).to(device)


def measure(fn, labels, distances, repeats: int) -> tuple[float, float]:
    """Median seconds per call and peak MiB of one call."""
    fn(labels, distances)
    times = []
    for _ in range(repeats):
        if labels.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(labels, distances)
        if labels.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if labels.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(labels, distances)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(labels, distances)
        live = peak = 0
        for event in sorted((e for e in prof.events() if e.cpu_memory_usage), key=lambda e: e.time_range.start):
            live += event.cpu_memory_usage
            peak = max(peak, live)
        peak /= 2**20
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    distances = torch.tensor(AudioSetOntology.load().distances).to(args.device)
    compiled = torch.compile(ontology_loss_weight, dynamic=False)
    rows = []
    for batch in args.batch:
        labels = mixed_labels(batch, distances.shape[0], args.device)
        reference = gathered_weight(labels, distances)
        for name, fn in (("gather (before)", gathered_weight), ("dense, eager", ontology_loss_weight),
                         ("dense, compiled", compiled)):  # fmt: skip
            seconds, peak = measure(fn, labels, distances, args.repeats)
            difference = (fn(labels, distances) - reference).abs().max().item()
            rows.append(
                {"batch": batch, "variant": name, "ms": seconds * 1e3, "peak_mib": peak, "max_diff": difference}
            )
            print(f"B={batch:4d} {name:16s} {seconds * 1e3:8.2f} ms  peak {peak:7.1f} MiB  max |Δ| {difference:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "threads": args.threads, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
