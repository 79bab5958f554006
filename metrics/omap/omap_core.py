"""Ontology-aware mean average precision (OmAP, Liu et al., INTERSPEECH 2023), plain average precision and mAP: the
one implementation. It needs only numpy. It lives beside the `evaluate` module (`omap.py`), which imports it
relatively, so that the module is self-contained wherever it is loaded (a Hub Space, evaluate's cache); the
`spa-audio-tagging` package imports this file by its path (`modeling_spa.files.project_module`).

For level lambda = 0..Dmax a false positive for class c on clip n is weighted by
w = 0 if dmin <= lambda else dmin / m_lambda, where dmin is the graph distance from c to the nearest
positive label of the clip and m_lambda the mean off-diagonal entry of the thresholded distance matrix.
True positives are not weighted. AP uses scikit-learn's step-wise formula and tie handling, so with unit
weights it equals `sklearn.metrics.average_precision_score`.

How it is fast: each class is sorted once. AP only reads precision at the tie group of each positive, and
the weighted false-positive count there is sum_d w_lambda(d) * H[d], where H[d] counts the negatives ranked
at or above that group whose nearest positive is at distance d. H is one histogram per positive group,
shared by all levels, so every level costs a cumulative sum over at most Dmax+1 bins.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

_MIN_SCALE = 1e-9  # the reference only divides by m_lambda above this
_CLASS_CHUNK = 64  # classes sorted together: bounds memory at ~ N * 64 * 30 bytes
_CLIP_CHUNK = 4096  # clips per step of the nearest-positive search


def _to_numpy(array: Any) -> np.ndarray:
    if type(array).__module__.startswith("torch"):
        array = array.detach().float().cpu().numpy()  # bfloat16 has no numpy dtype
    return np.asarray(array)


def _check_references(references: Any) -> np.ndarray:
    y = _to_numpy(references)
    if y.ndim != 2 or 0 in y.shape:
        raise ValueError(f"references must be a non-empty 2-D (clips, classes) array, got shape {y.shape}.")
    if y.dtype != bool:
        bad = ~((y == 0) | (y == 1))
        if bad.any():
            clip, cls = np.argwhere(bad)[0]
            raise ValueError(f"references must be binary (0/1); clip {clip}, class {cls} is {y[clip, cls]!r}.")
    return y.astype(bool)


def _check_predictions(predictions: Any, shape: tuple[int, int]) -> np.ndarray:
    s = _to_numpy(predictions)
    if s.shape != shape:
        raise ValueError(f"predictions have shape {s.shape} but references have shape {shape}.")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)  # exact for integers and float16, so ties are preserved
    bad = ~np.isfinite(s)
    if bad.any():
        clip, cls = np.argwhere(bad)[0]
        raise ValueError(f"predictions must be finite; clip {clip}, class {cls} is {s[clip, cls]!r}.")
    return s


def check_distances(distances: Any, num_classes: int) -> np.ndarray:
    """Validate a class distance matrix: square, symmetric, non-negative integer hop counts, zero diagonal."""
    d = _to_numpy(distances)
    if d.shape != (num_classes, num_classes):
        raise ValueError(f"distances must be ({num_classes}, {num_classes}) for {num_classes} classes, got {d.shape}.")
    if not np.isfinite(d).all() or (d < 0).any() or (d != np.round(d)).any():
        raise ValueError("distances must be finite, non-negative integers (graph hop counts).")
    asymmetric = d != d.T
    if asymmetric.any():
        i, j = np.argwhere(asymmetric)[0]
        raise ValueError(
            f"distances must be symmetric (graph distances on the undirected ontology); D[{i}, {j}] = {d[i, j]} but "
            f"D[{j}, {i}] = {d[j, i]}."
        )
    if (np.diag(d) != 0).any():
        raise ValueError(f"distances must have a zero diagonal; class {int(np.flatnonzero(np.diag(d))[0])} does not.")
    off_diagonal_zero = (d == 0) & ~np.eye(num_classes, dtype=bool)
    if off_diagonal_zero.any():
        i, j = np.argwhere(off_diagonal_zero)[0]
        raise ValueError(f"distances between different classes must be >= 1; classes {i} and {j} are at 0.")
    if d.max() > 255:
        raise ValueError(f"distances up to 255 are supported, got {int(d.max())}.")
    return d.astype(np.int64)


def level_scales(distances: np.ndarray) -> np.ndarray:
    """m_lambda for lambda = 0..Dmax: mean off-diagonal entry of D with entries <= lambda zeroed (or 1)."""
    c = distances.shape[0]
    counts = np.bincount(distances.ravel(), minlength=distances.max() + 1).astype(np.float64)
    mass = counts * np.arange(len(counts))  # the diagonal is 0 and adds no mass
    above = mass[::-1].cumsum()[::-1]  # above[l] = mass at distances >= l
    m = np.append(above[1:], 0.0) / max(c * (c - 1), 1)
    return np.where(m > _MIN_SCALE, m, 1.0)


def nearest_positive_distance(y: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """dmin[n, c] = min over the positive labels p of clip n of D[p, c]; Dmax for a clip without labels."""
    dmin = np.full(y.shape, distances.max(), dtype=np.uint8)
    d8 = distances.astype(np.uint8)
    for start in range(0, y.shape[0], _CLIP_CHUNK):
        clips, labels = np.nonzero(y[start : start + _CLIP_CHUNK])
        if len(clips) == 0:
            continue
        first = np.flatnonzero(np.r_[True, clips[1:] != clips[:-1]])
        dmin[start + clips[first]] = np.minimum.reduceat(d8[labels], first, axis=0)
    return dmin


def _cumsum_within_rows(counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cumulative sum down axis 0 that restarts wherever `rows` (sorted) changes."""
    total = counts.cumsum(axis=0)
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    row_index = np.cumsum(np.r_[True, rows[1:] != rows[:-1]]) - 1
    return total - (total - counts)[first][row_index]


def _chunk_precisions(scores: np.ndarray, y: np.ndarray, dmin: np.ndarray, scales: np.ndarray):
    """Precision at every positive, unweighted and at each level, for classes laid out as rows (k, N).

    Returns (class row of each positive, plain precision (P,), level precisions (P, L)).
    """
    k, n = scores.shape
    levels = len(scales)
    order = np.argsort(scores, axis=1)[:, ::-1]  # descending; order inside ties does not matter
    s = np.take_along_axis(scores, order, axis=1).ravel()
    pos = np.take_along_axis(y, order, axis=1).ravel()
    dist = np.take_along_axis(dmin, order, axis=1).ravel()

    # A tie group ends where the next score differs or the class row ends; groups never span rows.
    is_end = np.ones(k * n, dtype=bool)
    is_end[:-1] = s[:-1] != s[1:]
    is_end[n - 1 :: n] = True
    group_end = np.flatnonzero(is_end)[np.cumsum(is_end) - is_end]

    positives = np.flatnonzero(pos)
    if len(positives) == 0:
        return positives, np.empty(0), np.empty((0, levels))
    ends = np.unique(group_end[positives])  # tie groups that hold a positive, sorted, row by row
    row_of_end = ends // n

    # Histogram the negatives by (first positive group at or below them, their distance d).
    marker = np.zeros(k * n, dtype=np.int64)
    marker[ends] = 1
    segment = np.cumsum(marker) - marker
    negatives = np.flatnonzero(~pos)
    seg = segment[negatives]
    keep = seg < len(ends)
    keep[keep] = row_of_end[seg[keep]] == negatives[keep] // n
    counts = np.bincount(seg[keep] * levels + dist[negatives[keep]], minlength=len(ends) * levels)
    counts = counts.reshape(len(ends), levels)
    hist = _cumsum_within_rows(counts, row_of_end)

    true_pos = np.cumsum(pos)
    tp = (true_pos[ends] - np.r_[0, true_pos[n - 1 :: n]][row_of_end]).astype(np.float64)

    # Weighted false positives at each level: sum over d > lambda of d * H[d] / m_lambda.
    mass = hist * np.arange(levels)
    above = mass[:, ::-1].cumsum(axis=1)[:, ::-1]
    weighted_fp = np.concatenate([above[:, 1:], np.zeros((len(ends), 1))], axis=1) / scales
    plain = tp / (tp + hist.sum(axis=1))
    weighted = tp[:, None] / (tp[:, None] + weighted_fp)

    which_end = np.searchsorted(ends, group_end[positives])
    return positives // n, plain[which_end], weighted[which_end]


def _per_class_ap(s: np.ndarray, y: np.ndarray, dmin: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain AP (classes,) and AP at each level (levels, classes); NaN for classes without a positive clip."""
    num_classes = y.shape[1]
    ap = np.full(num_classes, np.nan)
    level_ap = np.full((len(scales), num_classes), np.nan)
    for start in range(0, num_classes, _CLASS_CHUNK):
        cols = slice(start, min(start + _CLASS_CHUNK, num_classes))
        rows, plain, weighted = _chunk_precisions(
            np.ascontiguousarray(s[:, cols].T),
            np.ascontiguousarray(y[:, cols].T),
            np.ascontiguousarray(dmin[:, cols].T),
            scales,
        )
        if len(rows) == 0:
            continue
        # Positives come row by row, so per-class means are sums over contiguous runs.
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        n_pos = np.diff(np.r_[first, len(rows)])
        classes = start + rows[first]
        ap[classes] = np.add.reduceat(plain, first) / n_pos
        level_ap[:, classes] = (np.add.reduceat(weighted, first, axis=0) / n_pos[:, None]).T
    return ap, level_ap


def average_precision(references: Any, predictions: Any) -> np.ndarray:
    """Average precision of each class (classes,) of (clips, classes) binary labels and scores: scikit-learn's
    step-wise formula and tie handling (equal to `sklearn.metrics.average_precision_score` per class), NaN for a
    class without a positive clip. The `ap_per_class` of `compute_omap`, without a distance matrix."""
    y = _check_references(references)
    s = _check_predictions(predictions, y.shape)
    return _per_class_ap(s, y, np.zeros(y.shape, dtype=np.uint8), np.ones(1))[0]


def compute_omap(references: Any, predictions: Any, distances: Any) -> dict[str, Any]:
    """OmAP, OmAP per level and mAP for multi-label scores.

    Args:
        references: (clips, classes) binary labels.
        predictions: (clips, classes) finite scores (probabilities or logits: only the ranking matters).
        distances: (classes, classes) graph hop distances (`ontology_distances.audioset_distances` for AudioSet).

    Returns a dict with `map`, `omap` (mean over the Dmax+1 levels, lambda = Dmax included, where every
    AP is 1), `omap_per_lambda` (Dmax+1,), `ap_per_class` (classes,), `omap_ap_per_class`
    (Dmax+1, classes), `n_classes_evaluated`, `n_classes_without_positives` and
    `n_clips_without_positives`. Classes with no positive clip are NaN per class and left out of every
    mean; clips with no positive label count as at distance Dmax from every class.
    """
    y = _check_references(references)
    s = _check_predictions(predictions, y.shape)
    num_clips, num_classes = y.shape
    if distances is None:
        raise ValueError("OmAP needs the class distance matrix: pass `distances` ((classes, classes) hop counts).")
    d = check_distances(distances, num_classes)
    ap, level_ap = _per_class_ap(s, y, nearest_positive_distance(y, d), level_scales(d))
    evaluated = ~np.isnan(ap)
    missing = int(num_classes - evaluated.sum())
    if missing == num_classes:
        raise ValueError("No class has a positive clip: OmAP and mAP are undefined.")
    if missing:
        warnings.warn(
            f"{missing} of {num_classes} classes have no positive clip and are left out of the means.", stacklevel=2
        )
    unlabelled = int((~y.any(axis=1)).sum())
    if unlabelled:
        # Such a clip is at distance Dmax from every class: at high levels its false positives weigh up to
        # Dmax / m_lambda each (thousands of times a near confusion) and can dominate the metric.
        warnings.warn(
            f"{unlabelled} of {num_clips} clips have no positive label; their false positives are weighted as the "
            "farthest confusions (distance Dmax). Drop or label them if that is not intended.",
            stacklevel=2,
        )
    per_level = level_ap[:, evaluated].mean(axis=1)
    return {
        "map": float(ap[evaluated].mean()),
        "omap": float(per_level.mean()),
        "omap_per_lambda": per_level,
        "ap_per_class": ap,
        "omap_ap_per_class": level_ap,
        "n_classes_evaluated": int(evaluated.sum()),
        "n_classes_without_positives": missing,
        "n_clips_without_positives": unlabelled,
    }
