"""Paired timing for the benchmarks that compare two arms (α = 0 against α > 0, our port against its peer).

On a shared machine the load changes from one second to the next, so timing each arm in its own process, one after
the other, measures the load as much as the code. Here both arms live in one process and are stepped in pairs whose
order alternates (A B, B A, A B, ...): each pair sees nearly the same load and gives one ratio B / A. A figure is the
median of the pair ratios of several such processes ("runs", each starting with the other arm than the last), with
its spread: the interquartile range of the pairs and each run's own median. The machine's load average before and
after is part of the result.

Clocks: `wall` (the default) is what a user waits for. On a machine that others load, a process with several threads
spends much of its wall time waiting for its own threads to be scheduled, which inflates whatever step has more
(small) parallel operators; `cpu` (process time, with `--threads 1`) counts the work alone and is the steadier measure
there, though caches shared with the other processes still add noise.
"""

from __future__ import annotations

import collections
import os
import statistics
import time
from collections.abc import Callable

import torch


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(step: Callable[[], object], device: str, clock: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = CLOCKS[clock]()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return CLOCKS[clock]() - started


def time_pairs(
    arms: dict[str, Callable[[], object]], pairs: int, device: str, reverse: bool, clock: str = "wall"
) -> dict[str, list[float]]:
    """Seconds of each step of the two `arms` (on `clock`), after one warm-up step each: `pairs` pairs, the order
    alternating from pair to pair (B first in the first pair with `reverse`)."""
    names = list(arms)
    if len(names) != 2:
        raise ValueError(f"time_pairs compares two arms, got {names}")
    for name in names:
        arms[name]()
    times = {name: [] for name in names}
    for index in range(pairs):
        for name in names[:: -1 if (index % 2 == 0) == reverse else 1]:
            times[name].append(_timed(arms[name], device, clock))
    return times


def profile_pairs(arms: dict[str, Callable[[], object]], pairs: int, device: str) -> dict[str, dict[str, list]]:
    """Self time (ms) and calls per operator of one step of each arm, the mean of `pairs` steps taken in alternating
    order after a warm-up (the load then falls on both arms alike): arm -> operator -> [ms, calls]."""
    totals = {name: collections.defaultdict(lambda: [0.0, 0.0]) for name in arms}
    for step in arms.values():
        step()
    for index in range(pairs):
        for name in list(arms)[:: 1 if index % 2 == 0 else -1]:
            with torch.profiler.profile() as profile:
                arms[name]()
            for event in profile.key_averages():
                self_us = event.self_cuda_time_total if device == "cuda" else event.self_cpu_time_total
                totals[name][event.key][0] += self_us / 1e3 / pairs
                totals[name][event.key][1] += event.count / pairs
    return totals


def pair_ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    return [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]


def summarize(runs: list[list[float]]) -> dict:
    """The median of all pair ratios of all runs, their quartiles, and each run's median."""
    ratios = [ratio for run in runs for ratio in run]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "run_medians": [statistics.median(run) for run in runs],
        "pairs": len(ratios),
        "runs": len(runs),
    }


def describe(summary: dict) -> str:
    runs = " / ".join(f"{m:.3f}" for m in summary["run_medians"])
    return (
        f"{summary['median']:.3f} (IQR {summary['q1']:.3f}-{summary['q3']:.3f}; run medians {runs}; "
        f"{summary['pairs']} pairs in {summary['runs']} runs)"
    )
