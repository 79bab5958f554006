"""Evaluation: scoring a split with a model (gathered over processes) into mAP, OmAP, accuracy (single-label models)
and the label-space diagnostics, for the training loop's validation and `recipes/evaluate.py`."""

from .scoring import (
    NO_HIERARCHY_NOTE,
    SplitScores,
    accuracy,
    check_audioset_head,
    clip_outputs,
    clip_scores,
    evaluate,
    model_distances,
    probabilities,
    score_split,
    split_metrics,
)

__all__ = [
    "NO_HIERARCHY_NOTE",
    "SplitScores",
    "accuracy",
    "check_audioset_head",
    "clip_outputs",
    "clip_scores",
    "evaluate",
    "model_distances",
    "probabilities",
    "score_split",
    "split_metrics",
]
