"""Which splits a run trains, validates and tests on, and the validation subset held out of train.

The rule (`resolve_splits`), for a dataset with the splits it has:
- train: `train_split` (default "train"); it must exist.
- validation (tuned on, evaluated every epoch): an explicit `eval_split` wins, as it is. By default the dataset's
  "validation" split when it has one; otherwise a held-out part of train: each clip whose id hashes below
  `validation_fraction` (`in_holdout`) is taken out of train and used for validation. AudioSet has no validation
  split (`agkphysics/AudioSet`, and the builds of `recipes/build_audioset.py`, have train and test), and its eval
  set is the test set on which results are reported: hyper-parameters and checkpoints are never chosen on it.
- test (evaluated once, at the end): an explicit `test_split` wins ("" for none); by default "test" when the
  dataset has it, else none.

The hold-out is a pure function of the clip id and `validation_seed`: the same clips in every run, whatever the
training seed, the shard layout, the order of the rows, or streaming; and a clip is never in both parts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

VALIDATION = "validation"
TEST = "test"
HELD_OUT, REST = "held_out", "rest"


@dataclass(frozen=True)
class SplitSpec:
    """One part of a run's data: the dataset split `source`, all of it or one side of the validation hold-out.

    `name` is what results are reported under ("validation" for a hold-out of train).
    """

    name: str
    source: str
    holdout: str | None = None  # None: every clip; HELD_OUT: the held-out clips only; REST: the others
    fraction: float = 0.0
    seed: int = 0

    def keeps(self, video_id: str) -> bool:
        """Whether this part holds the clip `video_id`."""
        if self.holdout is None:
            return True
        return in_holdout(video_id, self.fraction, self.seed) == (self.holdout == HELD_OUT)

    def describe(self) -> str:
        """The clips of this part, for logs and model cards."""
        if self.holdout is None:
            return f"the {self.source!r} split"
        held = self.holdout == HELD_OUT
        share = self.fraction if held else 1 - self.fraction
        side = "held out" if held else "the rest"
        return f"{share:.1%} of {self.source!r} ({side}: clip-id hash below {self.fraction:g}, seed {self.seed})"


def in_holdout(video_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether a clip is in the validation hold-out: the first 8 bytes of sha256("{seed}:{video_id}") as a number in
    [0, 1) fall below `fraction`. Stable across Python versions and machines (unlike `hash`)."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def resolve_splits(
    available: Sequence[str],
    train_split: str = "train",
    eval_split: str | None = None,
    test_split: str | None = None,
    validation_fraction: float = 0.05,
    validation_seed: int = 0,
    dataset: str = "the dataset",
) -> dict[str, SplitSpec | None]:
    """{"train": ..., "eval": ..., "test": ...} by the rule of the module docstring; a clear error for a split the
    dataset does not have. `eval_split`/`test_split` None means "the default"; `test_split` "" means none."""
    available = list(available)

    def named(split: str, flag: str) -> SplitSpec:
        if split not in available:
            raise ValueError(f"{dataset} has no split {split!r} ({flag}); its splits: {available}.")
        return SplitSpec(split, split)

    train = named(train_split, "--train_split")
    if eval_split:
        evaluation = named(eval_split, "--eval_split")
    elif VALIDATION in available and train_split != VALIDATION:
        evaluation = SplitSpec(VALIDATION, VALIDATION)
    elif 0 < validation_fraction < 1:
        evaluation = SplitSpec(VALIDATION, train_split, HELD_OUT, validation_fraction, validation_seed)
        train = SplitSpec(train_split, train_split, REST, validation_fraction, validation_seed)
    else:
        raise ValueError(
            f"{dataset} has no 'validation' split (its splits: {available}): hold part of {train_split!r} out with "
            f"--validation_fraction in (0, 1) (got {validation_fraction}), or name one with --eval_split."
        )
    if test_split is None:
        test = SplitSpec(TEST, TEST) if TEST in available and TEST not in (train_split, evaluation.source) else None
    else:
        test = named(test_split, "--test_split") if test_split else None
    return {"train": train, "eval": evaluation, "test": test}


def split_names(source: str, config_name: str | None = None) -> list[str]:
    """The splits of a `save_to_disk` folder, a parquet file ("train") or a folder / Hub id (`datasets`' rule:
    file names such as data/test-00000-of-00001.parquet; the Hub's configs)."""
    import datasets

    if os.path.isfile(os.path.join(source, "dataset_dict.json")):
        return list(datasets.load_from_disk(source).keys())
    if os.path.isfile(os.path.join(source, "state.json")) or source.endswith(".parquet"):
        return ["train"]
    return list(datasets.get_dataset_split_names(source, config_name))


def select(dataset, spec: SplitSpec):
    """A `datasets.Dataset` or `IterableDataset` restricted to the clips of `spec` (unchanged without a hold-out).

    Reads the `video_id` column only; a map-style result is an index over the same rows (nothing is copied).
    """
    if spec.holdout is None:
        return dataset

    def keep(ids: list[str]) -> list[bool]:
        return [spec.keeps(str(clip)) for clip in ids]

    import datasets

    if isinstance(dataset, datasets.Dataset):  # map-style: the indices are kept in memory, not written beside the data
        return dataset.filter(keep, input_columns="video_id", batched=True, keep_in_memory=True)
    return dataset.filter(keep, input_columns="video_id", batched=True)


__all__ = ["HELD_OUT", "REST", "SplitSpec", "in_holdout", "resolve_splits", "select", "split_names"]
