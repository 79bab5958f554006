"""Labels: AudioSet mids -> multi-hot vectors over the model's classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class LabelEncoder:
    """AudioSet mids -> multi-hot vectors over the model's classes, in its output order.

    A mid that is not one of the classes is an error naming the clip, or, with `ignore_unknown`, left out (the
    caller reports it: `known` tells which mids count).
    """

    def __init__(self, label_mids: Sequence[str], ignore_unknown: bool = False):
        self.label_mids = list(label_mids)
        self.index = {mid: i for i, mid in enumerate(self.label_mids)}
        self.ignore_unknown = ignore_unknown

    def unknown(self, mids: Sequence[str]) -> list[str]:
        return [mid for mid in mids if mid not in self.index]

    def __call__(self, mids: Sequence[str], clip_id: str = "?") -> np.ndarray:
        unknown = self.unknown(mids)
        if unknown and not self.ignore_unknown:
            raise ValueError(
                f"clip {clip_id}: labels {unknown} are not among the model's {len(self.index)} classes. To leave such "
                "labels out of every clip (counted per label), pass --unknown_labels ignore (train.py, evaluate.py, "
                "listening_study.py select) or ignore_unknown_labels=True."
            )
        target = np.zeros(len(self.label_mids), dtype=np.float32)
        target[[self.index[mid] for mid in mids if mid in self.index]] = 1.0
        return target
