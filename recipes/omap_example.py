"""OmAP on two taggers that make equally many mistakes, and the AudioSet ontology in numbers.

Tagger A confuses each class with an ontology neighbour (Speech -> Male speech); tagger B with a far class
(Speech -> Thunder). Plain mAP cannot tell them apart; OmAP can.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from modeling_spa.metrics import compute_omap
from modeling_spa.taxonomy import AudioSetOntology


def ontology_summary(ontology: AudioSetOntology) -> None:
    d = ontology.distances
    print(ontology)
    print(f"label distances: {d.shape[0]}x{d.shape[1]}, max {d.max()} hops -> {d.max() + 1} OmAP levels")
    counts = {}
    for mid in ontology.label_mids:
        top = ontology.nodes[ontology.top_level(mid)].name
        counts[top] = counts.get(top, 0) + 1
    print("labels per top-level category:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for mid in (ontology.label_mids[1], ontology.label_mids[74]):
        print(f"  concat description: {ontology.description(mid)}")


def confusion_permutation(distances: np.ndarray, near: bool) -> np.ndarray:
    """A one-to-one class -> class map that minimises (near) or maximises (far) total ontology distance."""
    cost = distances.astype(float)
    np.fill_diagonal(cost, 1e6 if near else -1e6)
    _, target = linear_sum_assignment(cost, maximize=not near)
    return target


def confused_scores(y: np.ndarray, confusion: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Positives score 0.6-0.9, background 0-0.3, and every clip of class c lights up class confusion[c].

    The receiving class k gets the same false-positive strengths strength[k] whichever class sends them,
    so both taggers rank every class identically and have the same plain mAP.
    """
    rng = np.random.default_rng(0)
    scores = rng.random(y.shape) * 0.3 + y * (0.6 + 0.3 * rng.random(y.shape))
    clips, classes = np.nonzero(y)
    rank_in_class = np.arange(len(clips)) % strength.shape[1]
    scores[clips, confusion[classes]] = strength[confusion[classes], rank_in_class]
    return scores


def main() -> None:
    ontology = AudioSetOntology.load()
    ontology_summary(ontology)
    classes, per_class = len(ontology.label_mids), 8
    y = np.zeros((classes * per_class, classes), dtype=int)
    y[np.arange(classes * per_class), np.repeat(np.arange(classes), per_class)] = 1
    strength = np.random.default_rng(1).random((classes, per_class)) * 0.9

    print(f"\nOmAP on {len(y)} clips ({per_class} per class), each also scoring one wrong class:")
    print(f"{'tagger':34s} {'mean hops':>9s} {'mAP':>7s} {'OmAP':>7s} {'OmAP_0':>7s} {'OmAP_5':>7s}")
    for name, near in (("A: confuses ontology neighbours", True), ("B: confuses far-away classes", False)):
        confusion = confusion_permutation(ontology.distances, near)
        hops = ontology.distances[np.arange(classes), confusion].mean()
        result = compute_omap(y, confused_scores(y, confusion, strength), ontology.distances)
        per = result["omap_per_lambda"]
        print(f"{name:34s} {hops:9.2f} {result['map']:7.4f} {result['omap']:7.4f} {per[0]:7.4f} {per[5]:7.4f}")


if __name__ == "__main__":
    main()
