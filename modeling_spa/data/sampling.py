"""Class-balanced sampling of multi-label clips, as AudioSet recipes do (PaSST's `get_ft_weighted_sampler`).

A clip's weight sums, over its labels, `scale / (count(label) + offset)`: rare classes are drawn more often, and the
offset keeps classes seen a handful of times from dominating (PaSST: offset 100, scale 1000, sum over labels).
Clips are drawn with replacement from those weights, `num_samples` per epoch, from a generator seeded with
(seed, epoch) only: the same epoch gives the same draw on every process and in every run, so a resumed run
continues exactly (the training loop skips the batches it already did).

Under several processes the draw is one global sequence, split without overlap: Accelerate's prepared loader deals
its batches out in turn (`BatchSamplerShard`; leave `num_replicas` at 1 there, and give `multiple_of` = batch size x
processes, see `BalancedSampler`), and a plain DDP loop gives each rank `num_replicas`/`rank`, which take every
`num_replicas`-th index, like `DistributedSampler`. Either way the ranks together use every position of the draw once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

PASST_OFFSET = 100.0
PASST_SCALE = 1000.0


def label_indices(
    clip_labels: Sequence[Sequence[str]],
    label_mids: Sequence[str],
    clip_ids: Sequence[str] | None = None,
    ignore_unknown: bool = False,
) -> list[np.ndarray]:
    """Each clip's labels as class indices in the model's order; an unknown mid is an error naming it and the clip
    (by its id, else its position), or with `ignore_unknown` left out (as the data collator leaves it out)."""
    index = {mid: i for i, mid in enumerate(label_mids)}
    out = []
    for n, mids in enumerate(clip_labels):
        if (unknown := [mid for mid in mids if mid not in index]) and not ignore_unknown:
            clip = clip_ids[n] if clip_ids is not None else f"#{n}"
            raise ValueError(f"clip {clip}: labels {unknown} are not among the model's {len(index)} classes.")
        known = [index[mid] for mid in mids if mid in index]
        out.append(np.asarray(known, dtype=np.int64))
    return out


def unknown_label_counts(clip_labels: Sequence[Sequence[str]], label_mids: Sequence[str]) -> dict[str, int]:
    """How many clips carry each mid that is not one of `label_mids` (what `ignore_unknown` leaves out)."""
    known = set(label_mids)
    counts: dict[str, int] = {}
    for mids in clip_labels:
        for mid in set(mids) - known:
            counts[mid] = counts.get(mid, 0) + 1
    return dict(sorted(counts.items()))


def class_counts(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """How many clips carry each class (a clip counts once per class)."""
    flat = np.concatenate([np.unique(clip) for clip in labels]) if labels else np.zeros(0, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes).astype(np.float64)


def balanced_weights(
    labels: Sequence[np.ndarray],
    num_classes: int,
    offset: float = PASST_OFFSET,
    scale: float = PASST_SCALE,
    reduce: str = "sum",
) -> np.ndarray:
    """Per-clip sampling weights: `reduce` ("sum" as PaSST by default, or "max") of scale / (count + offset).

    A clip without labels weighs 0 (never drawn), as in PaSST.
    """
    if reduce not in ("sum", "max"):
        raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")
    per_class = scale / (class_counts(labels, num_classes) + offset)
    combine = np.sum if reduce == "sum" else np.max
    return np.array([combine(per_class[np.unique(clip)]) if len(clip) else 0.0 for clip in labels])


def expected_class_frequency(labels: Sequence[np.ndarray], weights: np.ndarray, num_classes: int) -> np.ndarray:
    """The share of drawn clips that carry each class, when clips are drawn in proportion to `weights`."""
    clips = np.repeat(np.arange(len(labels)), [len(np.unique(clip)) for clip in labels])
    classes = np.concatenate([np.unique(clip) for clip in labels]) if labels else np.zeros(0, dtype=np.int64)
    mass = np.bincount(classes, weights=weights[clips], minlength=num_classes)
    return mass / weights.sum()


class BalancedSampler(Sampler[int]):
    """Draws `num_samples` clip indices per epoch with replacement, in proportion to `weights`.

    The draw depends on (seed, epoch) only; call `set_epoch` before each epoch (Accelerate's loaders do when the
    training loop calls their `set_epoch`). With `num_replicas` > 1 this process yields its share of the global
    draw (every `num_replicas`-th index from `rank`).

    The global draw is `num_samples` rounded up to a multiple of `multiple_of` x `num_replicas`. Under Accelerate,
    `multiple_of` = batch size x processes makes the draw whole rounds of full batches: Accelerate deals batches out
    in turn and (`even_batches`, its default) completes a short last round from the start of the draw, which would
    use those positions twice. Up, not down: extra draws with replacement lose nothing, whereas rounding down would
    draw fewer clips than asked (none at all below one round).
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        multiple_of: int = 1,
    ):
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.ndim != 1 or not np.isfinite(self.weights).all() or (self.weights < 0).any():
            raise ValueError("weights must be a 1-D sequence of finite, non-negative numbers")
        if not self.weights.sum() > 0:
            raise ValueError("every clip weighs 0: the training split has no labelled clip")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if multiple_of < 1:
            raise ValueError(f"multiple_of must be at least 1, got {multiple_of}")
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0
        self.multiple_of = multiple_of

    @property
    def total_size(self) -> int:
        unit = self.multiple_of * self.num_replicas
        return math.ceil(self.num_samples / unit) * unit

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_draw(self) -> np.ndarray:
        """This epoch's indices over all processes (`total_size` of them), from a generator seeded by (seed, epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.choice(len(self.weights), size=self.total_size, replace=True, p=self.weights / self.weights.sum())

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_draw()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas


__all__ = [
    "BalancedSampler",
    "balanced_weights",
    "class_counts",
    "expected_class_frequency",
    "label_indices",
]
