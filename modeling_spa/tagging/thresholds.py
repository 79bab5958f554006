"""Per-class decision thresholds: calibrated on a labelled split, stored in the model's config, used by `spa-tag`,
the timelines and (through `pipeline_tags`) the audio-classification pipeline.

A multi-label tagger's scores are not equally calibrated across classes: one class is reliable at 0.3, another needs
0.8. `calibrate_thresholds` picks, for each class, the threshold that maximises its F1 on a labelled split; a class
with fewer than `min_positives` positive clips there keeps `fallback` (a threshold tuned on one or two clips would
say more about those clips than about the class). The thresholds live in `SPAConfig.thresholds` (one per class,
saved in config.json, dropped when the model is re-headed) with their provenance in `SPAConfig.threshold_calibration`;
`recipes/evaluate.py --calibrate --write_thresholds` writes both into a checkpoint and its card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_THRESHOLD = 0.5
MIN_POSITIVES = 3


@dataclass(frozen=True)
class Calibration:
    """Thresholds (classes,), which classes kept the fallback (too few positives), and the settings used."""

    thresholds: np.ndarray
    fallback_classes: list[int]
    min_positives: int
    fallback: float

    def record(self, **provenance) -> dict:
        """What `SPAConfig.threshold_calibration` keeps: the method, the settings, and `provenance` (the split...)."""
        return {
            "method": "per-class maximum F1",
            "min_positives": self.min_positives,
            "fallback": self.fallback,
            "n_fallback": len(self.fallback_classes),
            **provenance,
        }


def _best_f1_threshold(scores: np.ndarray, positives: np.ndarray) -> float:
    """The threshold maximising F1 for one class: cuts only between distinct scores (tied clips are on the same side),
    placed midway between the last score kept and the next one, so that it does not sit on a calibration clip."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positives[order]
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]  # a cut after index k keeps clips 0..k
    tp = np.cumsum(hits)[last_of_tie]
    kept = np.flatnonzero(last_of_tie) + 1
    f1 = 2 * tp / (kept + hits.sum())  # 2TP / (2TP + FP + FN), with TP + FP = kept and TP + FN = positives
    best = int(np.argmax(f1))  # the first maximum: the highest threshold among equals
    cut = kept[best] - 1
    below = ranked[cut + 1] if cut + 1 < len(ranked) else 0.0
    return float((ranked[cut] + below) / 2)


def calibrate_thresholds(
    scores: np.ndarray, labels: np.ndarray, min_positives: int = MIN_POSITIVES, fallback: float = DEFAULT_THRESHOLD
) -> Calibration:
    """Per-class thresholds maximising F1 on (clips, classes) `scores` and multi-hot `labels`."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (clips, classes)")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if min_positives < 1:
        raise ValueError(f"min_positives must be at least 1, got {min_positives}")
    positives = labels > 0.5
    thresholds = np.full(scores.shape[1], float(fallback))
    counts = positives.sum(axis=0)
    for c in np.flatnonzero(counts >= min_positives):
        thresholds[c] = _best_f1_threshold(scores[:, c], positives[:, c])
    return Calibration(thresholds, np.flatnonzero(counts < min_positives).tolist(), min_positives, float(fallback))


def f1_report(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | float) -> dict:
    """Micro and macro F1, precision and recall of `scores >= thresholds` against multi-hot `labels`; the macro
    figures average the classes with at least one positive (the others have no recall to speak of)."""
    predicted = np.asarray(scores) >= np.asarray(thresholds)
    positives = np.asarray(labels) > 0.5
    tp = (predicted & positives).sum(axis=0)
    fp = (predicted & ~positives).sum(axis=0)
    fn = (~predicted & positives).sum(axis=0)
    present = positives.any(axis=0)

    def f1(t, p, n):
        return np.divide(2 * t, 2 * t + p + n, out=np.zeros(np.shape(t)), where=(2 * t + p + n) > 0)

    per_class = f1(tp, fp, fn)
    micro = float(f1(tp.sum(), fp.sum(), fn.sum()))
    return {
        "micro_f1": micro,
        "macro_f1": float(per_class[present].mean()) if present.any() else float("nan"),
        "micro_precision": float(tp.sum() / max(tp.sum() + fp.sum(), 1)),
        "micro_recall": float(tp.sum() / max(tp.sum() + fn.sum(), 1)),
        "n_classes_evaluated": int(present.sum()),
        "per_class_f1": per_class.tolist(),
    }


def store_thresholds(folder: str | Path, thresholds: np.ndarray, record: dict) -> None:
    """Writes calibrated thresholds into a checkpoint folder: its config.json (read afresh, so that no setting
    overridden for an evaluation is saved with them) and its card's "Decision thresholds" section."""
    from ..configuration_spa import SPAConfig
    from ..hub.cards import render_model_card, update_thresholds_section

    folder = Path(folder)
    config = SPAConfig.from_pretrained(folder)
    config.thresholds = [float(t) for t in thresholds]
    config.threshold_calibration = record
    config.save_pretrained(folder)
    card = folder / "README.md"
    if card.is_file():
        card.write_text(update_thresholds_section(card.read_text(encoding="utf-8"), config), encoding="utf-8")
    else:  # a checkpoint saved without a card gets one
        card.write_text(render_model_card(config, folder.name), encoding="utf-8")


def resolve_thresholds(config, threshold: str | float | Sequence[float] | None = "auto") -> np.ndarray:
    """Per-class thresholds (num_labels,) for a model: "auto" (or None) is the checkpoint's calibrated ones, a number
    is that threshold for every class, a sequence is one per class."""
    n = config.num_labels
    if threshold is None or (isinstance(threshold, str) and threshold == "auto"):
        stored = getattr(config, "thresholds", None)
        if stored is None:
            raise ValueError(
                "This checkpoint has no calibrated thresholds (config.thresholds): give a number (e.g. --threshold "
                "0.5), or calibrate them with recipes/evaluate.py --split validation --calibrate --write_thresholds"
            )
        return np.asarray(stored, dtype=np.float64)
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            raise ValueError(f"A threshold is 'auto' or a number in [0, 1], got {threshold!r}") from None
    values = np.asarray(threshold, dtype=np.float64)
    if values.ndim and values.shape != (n,):
        raise ValueError(f"Thresholds: one number or one per class ({n}), got shape {values.shape}")
    if not ((values >= 0) & (values <= 1)).all():
        raise ValueError(f"Thresholds must be in [0, 1], got {threshold}")
    return np.broadcast_to(values, (n,)).copy()


def pipeline_tags(predictions: list[dict], config, threshold: str | float = "auto") -> list[dict]:
    """The labels of an audio-classification pipeline's output that reach their class's threshold, best first, each
    with its `threshold`.

    The pipeline itself is transformers' and stays as users know it (sigmoid scores, `top_k`): ask it for every class,
    `pipe(audio, top_k=model.config.num_labels)`, and pass its list (one clip's) here with `pipe.model.config`.
    """
    thresholds = resolve_thresholds(config, threshold)
    index = config.label2id
    unknown = [p["label"] for p in predictions if p["label"] not in index]
    if unknown:
        raise ValueError(f"Labels not among the model's classes: {unknown[:3]} (is this the model's pipeline?)")
    kept = [
        {**p, "threshold": float(thresholds[index[p["label"]]])}
        for p in predictions
        if p["score"] >= thresholds[index[p["label"]]]
    ]
    return sorted(kept, key=lambda p: -p["score"])


__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_POSITIVES",
    "Calibration",
    "calibrate_thresholds",
    "f1_report",
    "pipeline_tags",
    "resolve_thresholds",
    "store_thresholds",
]
