"""Zero-shot scores of label texts, measured: average precision of text cosines against held-out classes, and chance.

A model trained without some classes can still rank clips for their texts: the cosine of each clip's E_a with
p_t(T(text)) (`SPAForAudioClassification.score_texts`). The average precision (AP) of those cosines over a split,
against the clips' labels of the class the text names, says how well the text finds the class. Chance is the AP of
a random ranking, in expectation the class's positive rate in the split. Only the ranking matters: cosines are not
probabilities, and AP compares no threshold.

Saved scores (`save_scores`: `scores.npy` (clips, texts) float32, `labels.npy` (clips, classes) uint8 and a
`scores.json` naming the rows, texts, classes and which class each text names) are enough to recompute every AP
(`load_scores`, `text_results`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics import compute_omap


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of each column of `scores` (clips, K) against the binary `labels` (clips, K): the library's one AP
    implementation, equal to `sklearn.metrics.average_precision_score` per column; NaN for a column without
    positives (with a warning; a ValueError if no column has one)."""
    # Plain AP does not depend on the class distances; OmAP's core needs a valid matrix, so it gets the trivial one.
    distances = 1 - np.eye(labels.shape[1], dtype=np.int64)
    with warnings.catch_warnings():
        # Clips with none of these classes are ordinary negatives for AP; the warning is about OmAP's weights.
        warnings.filterwarnings("ignore", message=r".*clips have no positive label", category=UserWarning)
        return compute_omap(labels, scores, distances)["ap_per_class"]


def text_results(scores: np.ndarray, labels: np.ndarray, text_classes: Sequence[int]) -> list[dict]:
    """For each text (a column of `scores`), the AP of its cosines against the labels of the class it names
    (`text_classes[i]`, a column of `labels`), the chance AP (that class's positive rate) and the positive count."""
    columns = labels[:, list(text_classes)].astype(np.float64)
    ap = average_precision(scores, columns)
    positives = columns.sum(axis=0)
    return [
        {"ap": float(ap[i]), "chance": float(positives[i] / len(columns)), "positives": int(positives[i])}
        for i in range(len(text_classes))
    ]


def save_scores(folder: str | Path, scores: np.ndarray, labels: np.ndarray, metadata: dict) -> Path:
    """Write `scores.npy` (float32), `labels.npy` (uint8) and `scores.json` (`metadata`: clip ids, texts, classes,
    ...) to `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "scores.npy", np.asarray(scores, dtype=np.float32))
    np.save(folder / "labels.npy", np.asarray(labels).round().astype(np.uint8))
    (folder / "scores.json").write_text(json.dumps(metadata, indent=2))
    return folder


def load_scores(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """What `save_scores` wrote: scores, labels, metadata."""
    folder = Path(folder)
    metadata = json.loads((folder / "scores.json").read_text())
    return np.load(folder / "scores.npy"), np.load(folder / "labels.npy"), metadata


__all__ = ["average_precision", "load_scores", "save_scores", "text_results"]
