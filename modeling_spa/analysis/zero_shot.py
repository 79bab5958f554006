"""Zero-shot scores of label texts, measured: average precision of text cosines against held-out classes, and chance.

A model trained without some classes can still rank clips for their texts: the cosine of each clip's E_a with
p_t(T(text)) (`SPAForAudioClassification.score_texts`). The average precision (AP) of those cosines over a split,
against the clips' labels of the class the text names, says how well the text finds the class. Chance is the
expected AP of a random ranking (`chance_ap`): for the few positives of a small test split it is well above the
class's positive rate (7 positives in 200 clips: 0.059, not 0.035), so the positive rate would flatter every score.
Only the ranking matters: cosines are not probabilities, and AP compares no threshold.

Saved scores (`save_scores`: `scores.npy` (clips, texts) float32, `labels.npy` (clips, classes) uint8 and a
`scores.json` naming the rows, texts, classes and which class each text names) are enough to recompute every AP
(`load_scores`, `text_results`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..metrics import average_precision


def chance_ap(positives: int, clips: int) -> float:
    """The expected AP of a uniformly random ranking (no ties) of `clips` clips of which `positives` are positive.

    Rank k holds a positive with probability R/N; given that, the precision there is (1 + (R-1)(k-1)/(N-1))/k
    (the other k-1 clips above it are positive with probability (R-1)/(N-1)). Averaged over the R positives:
    E[AP] = (H_N + (R-1)/(N-1) * (N - H_N)) / N, with H_N the N-th harmonic number. NaN without positives."""
    if positives == 0:
        return float("nan")
    if clips == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, clips + 1)))
    return (harmonic + (positives - 1) / (clips - 1) * (clips - harmonic)) / clips


def text_results(scores: np.ndarray, labels: np.ndarray, text_classes: Sequence[int]) -> list[dict]:
    """For each text (a column of `scores`), the AP of its cosines against the labels of the class it names
    (`text_classes[i]`, a column of `labels`), the chance AP (`chance_ap`), the positive rate and count."""
    columns = labels[:, list(text_classes)].astype(np.float64)
    ap = average_precision(columns, scores)
    positives = columns.sum(axis=0)
    return [
        {
            "ap": float(ap[i]),
            "chance": chance_ap(int(positives[i]), len(columns)),
            "positive_rate": float(positives[i] / len(columns)),
            "positives": int(positives[i]),
        }
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


__all__ = ["average_precision", "chance_ap", "load_scores", "save_scores", "text_results"]
