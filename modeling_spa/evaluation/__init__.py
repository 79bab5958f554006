"""Evaluation: scoring a split with a model (gathered over processes) into mAP, OmAP and the label-space
diagnostics, for the training loop's validation and `recipes/evaluate.py`."""

from .scoring import SplitScores, check_audioset_head, clip_outputs, clip_scores, evaluate, score_split, split_metrics

__all__ = [
    "SplitScores",
    "check_audioset_head",
    "clip_outputs",
    "clip_scores",
    "evaluate",
    "score_split",
    "split_metrics",
]
