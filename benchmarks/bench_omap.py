"""OmAP speed and memory at AudioSet evaluation size, against scikit-learn's plain mAP in the same run.

    python benchmarks/bench_omap.py [--clips 20000] [--repeats 3]

Labels follow AudioSet's shape: 527 classes with a long-tailed frequency and ~2.7 labels per clip, often a
class together with its ontology parent. Scores are float32 sigmoids of a noisy model.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
import warnings

import numpy as np
from sklearn.metrics import average_precision_score

from modeling_spa.metrics import compute_omap
from modeling_spa.taxonomy import AudioSetOntology


def audioset_like(clips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ontology = AudioSetOntology.load()
    rng = np.random.default_rng(seed)
    classes = len(ontology.label_mids)
    frequency = 1.0 / np.arange(1, classes + 1) ** 0.9
    frequency = rng.permutation(frequency / frequency.sum())
    index = {mid: i for i, mid in enumerate(ontology.label_mids)}
    parent = [next((index[p] for p in ontology.nodes[mid].parents if p in index), -1) for mid in ontology.label_mids]
    y = np.zeros((clips, classes), dtype=np.int8)
    for n in range(clips):
        for c in rng.choice(classes, size=rng.integers(1, 4), p=frequency):
            y[n, c] = 1
            if parent[c] >= 0 and rng.random() < 0.5:
                y[n, parent[c]] = 1
    logits = rng.normal(size=(clips, classes)) + 3.0 * y - 4.0
    return y, (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def timed(fn, repeats: int):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_memory(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    y, scores = audioset_like(args.clips)
    distances = AudioSetOntology.load().distances
    evaluated = y.any(axis=0)
    warnings.simplefilter("ignore")

    sk_time, sk_ap = timed(lambda: average_precision_score(y[:, evaluated], scores[:, evaluated], average=None), 1)
    ours_time, ours = timed(lambda: compute_omap(y, scores, distances), args.repeats)
    peak = peak_memory(lambda: compute_omap(y, scores, distances))
    figures = {
        "clips": args.clips,
        "classes": int(y.shape[1]),
        "labels_per_clip": float(y.sum(1).mean()),
        "classes_evaluated": int(evaluated.sum()),
        "sklearn_map_s": sk_time,
        "omap_all_levels_and_map_s": ours_time,
        "ratio_vs_sklearn": ours_time / sk_time,
        "omap_peak_memory_mb": peak / 2**20,
        "input_memory_mb": (y.nbytes + scores.nbytes) / 2**20,
        "max_abs_ap_difference_vs_sklearn": float(np.abs(ours["ap_per_class"][evaluated] - sk_ap).max()),
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    print(f"{args.clips} clips x {y.shape[1]} classes, {figures['labels_per_clip']:.2f} labels/clip")
    print(f"sklearn average_precision_score (mAP only): {sk_time:8.2f} s")
    print(f"compute_omap (22 levels + mAP):            {ours_time:8.2f} s  ({ours_time / sk_time:.3f}x sklearn)")
    print(f"compute_omap peak memory (tracemalloc):     {peak / 2**20:8.1f} MB")
    print(f"max |AP - sklearn AP|:                      {figures['max_abs_ap_difference_vs_sklearn']:.1e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
