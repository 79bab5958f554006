"""Multi-label mixtures of real recordings, drawn from disjoint train / validation / test pools of recordings.

Pools: every recording group (recordings with the same decoded audio form one group) goes to exactly one pool, so a
test mixture only holds recordings never heard in training. Classes with at least `min_recordings` groups are
assigned rarest first (iterative stratification): a class's groups go first to the pools where it has none yet
(test, then validation, then train), then to the pool furthest below the class's share (`POOL_SHARES`). The other
groups fill the pools up to their shares. A class is a target class when it has at least `min_recordings` groups
and, after the assignment, recordings in all three pools; rarer classes (too few recordings for three pools) stay
as labels of the source recordings but are no target of the mixtures.

A mixture (`plan_mixture`): 1 to `max_sources` recordings of distinct groups, the first chosen for the class whose
turn it is (classes cycle in a shuffled order, so every class has positives in every split), the others at random;
each cropped to at most the clip length (the loudest of three random crops, so that a crop is rarely silence),
placed at a random offset, at a random level (RMS in `LEVEL_DBFS`); over an optional faint noise floor. Its labels
are the union of its recordings' target-class labels. Every random choice comes from a generator seeded by (seed,
split, index): a mixture does not change when other mixtures or splits change size.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .shards import audio_row, encode_flac

POOLS = ("train", "validation", "test")
POOL_SHARES = {"train": 0.6, "validation": 0.2, "test": 0.2}
_FIRST_NEEDS = ("test", "validation", "train")  # a rare class's first recordings go where they are scarcest
LEVEL_DBFS = (-30.0, -16.0)
BACKGROUND_DBFS = (-60.0, -48.0)
MAX_PEAK = 0.95
CROP_TRIES = 3
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class Recording:
    id: str
    group: str  # recordings with the same group share their audio
    labels: tuple[str, ...]


def assign_pools(recordings: Sequence[Recording], seed: int, min_recordings: int = 5) -> dict[str, str]:
    """{recording id: pool}. Classes with at least `min_recordings` groups are spread over the pools, rarest class
    first (module docstring); the remaining groups then go, in a seeded order, to the pool furthest below its share
    of all groups, so the pools keep their 60/20/20 sizes."""
    groups: dict[str, set[str]] = {}
    for rec in recordings:
        groups.setdefault(rec.group, set()).update(rec.labels)
    by_class: dict[str, list[str]] = {}
    for group in sorted(groups):
        for mid in groups[group]:
            by_class.setdefault(mid, []).append(group)
    rng = np.random.default_rng(seed)
    pool_of: dict[str, str] = {}
    stratified = [mid for mid in by_class if len(by_class[mid]) >= min_recordings]
    for mid in sorted(stratified, key=lambda m: (len(by_class[m]), m)):
        members = by_class[mid]
        counts = {pool: sum(pool_of.get(g) == pool for g in members) for pool in POOLS}
        for index in rng.permutation(len(members)):
            group = members[index]
            if group in pool_of:
                continue
            empty = [pool for pool in _FIRST_NEEDS if counts[pool] == 0]
            pool = empty[0] if empty else max(POOLS, key=lambda p: POOL_SHARES[p] * len(members) - counts[p])
            pool_of[group] = pool
            counts[pool] += 1
    rest = sorted(set(groups) - set(pool_of))
    sizes = {pool: sum(p == pool for p in pool_of.values()) for pool in POOLS}
    for index in rng.permutation(len(rest)):
        pool = max(POOLS, key=lambda p: POOL_SHARES[p] * len(groups) - sizes[p])
        pool_of[rest[index]] = pool
        sizes[pool] += 1
    return {rec.id: pool_of[rec.group] for rec in recordings}


def target_classes(recordings: Sequence[Recording], pools: Mapping[str, str], min_recordings: int) -> list[str]:
    """Mids with at least `min_recordings` groups and recordings in all three pools (any order)."""
    groups: dict[str, set[str]] = {}
    present: dict[str, set[str]] = {}
    for rec in recordings:
        for mid in rec.labels:
            groups.setdefault(mid, set()).add(rec.group)
            present.setdefault(mid, set()).add(pools[rec.id])
    return [mid for mid in groups if len(groups[mid]) >= min_recordings and present[mid] == set(POOLS)]


@dataclass(frozen=True)
class Placement:
    """One recording in a mixture: samples [crop, crop + length) of it at `offset`, scaled by `gain`."""

    recording: str
    crop: int
    length: int
    offset: int
    gain: float


@dataclass(frozen=True)
class MixtureTask:
    video_id: str
    placements: tuple[Placement, ...]
    labels: tuple[str, ...]
    human_labels: tuple[str, ...]
    samples: int
    background_seed: int  # -1: no noise floor
    background_gain: float
    licences: str


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0


def _crop(rng: np.random.Generator, wave: np.ndarray, samples: int) -> tuple[int, int]:
    """(start, length): the whole recording when it fits, else the loudest of a few random crops of `samples`."""
    if len(wave) <= samples:
        return 0, len(wave)
    starts = rng.integers(0, len(wave) - samples + 1, size=CROP_TRIES)
    return int(max(starts, key=lambda s: _rms(wave[s : s + samples]))), samples


@dataclass
class MixturePlanner:
    """Plans the mixtures of one split from its pool."""

    waves: Mapping[str, np.ndarray]  # recording id -> samples at the build's rate
    recordings: Sequence[Recording]  # the pool, labels already restricted to the target classes
    classes: Sequence[str]  # target mids, in output order
    names: Mapping[str, str]
    licences: Mapping[str, str]
    rate: int
    duration_s: float
    seed: int
    max_sources: int = 3
    background: bool = True

    def __post_init__(self):
        self.samples = int(round(self.duration_s * self.rate))
        self.with_class = {mid: [r for r in self.recordings if mid in r.labels] for mid in self.classes}
        missing = [mid for mid, recs in self.with_class.items() if not recs]
        if missing:
            raise ValueError(f"No recording of class(es) {missing} in this pool.")

    def plan(self, split: str, count: int) -> list[MixtureTask]:
        order = np.random.default_rng([self.seed, _SPLIT_CODES[split], 2**32 - 1]).permutation(len(self.classes))
        return [self.plan_one(split, i, self.classes[order[i % len(self.classes)]]) for i in range(count)]

    def plan_one(self, split: str, index: int, first_class: str) -> MixtureTask:
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[split], index])
        candidates = self.with_class[first_class]
        chosen = [candidates[int(rng.integers(0, len(candidates)))]]
        wanted = int(rng.integers(1, self.max_sources + 1))
        for i in rng.permutation(len(self.recordings)):
            if len(chosen) == wanted:
                break
            if all(self.recordings[i].group != rec.group for rec in chosen):
                chosen.append(self.recordings[i])
        placements = []
        for rec in chosen:
            wave = self.waves[rec.id]
            crop, length = _crop(rng, wave, self.samples)
            offset = int(rng.integers(0, self.samples - length + 1))
            level = 10 ** (rng.uniform(*LEVEL_DBFS) / 20)
            placements.append(
                Placement(rec.id, crop, length, offset, level / max(_rms(wave[crop : crop + length]), 1e-6))
            )
        labels = sorted({mid for rec in chosen for mid in rec.labels}, key=self.classes.index)
        noise = int(rng.integers(0, 2**31)) if self.background else -1
        return MixtureTask(
            video_id=f"mix_{split}_{index:06d}",
            placements=tuple(placements),
            labels=tuple(labels),
            human_labels=tuple(self.names[mid] for mid in labels),
            samples=self.samples,
            background_seed=noise,
            background_gain=10 ** (rng.uniform(*BACKGROUND_DBFS) / 20) if self.background else 0.0,
            licences="; ".join(sorted({self.licences[rec.id] for rec in chosen})),
        )


def render(task: MixtureTask, waves: Mapping[str, np.ndarray]) -> np.ndarray:
    """The mixture's samples: placements summed over the noise floor, scaled down only if it would clip."""
    mix = np.zeros(task.samples, dtype=np.float64)
    if task.background_seed >= 0:
        noise = np.random.default_rng(task.background_seed).standard_normal(task.samples)
        mix += noise * task.background_gain
    for p in task.placements:
        mix[p.offset : p.offset + p.length] += waves[p.recording][p.crop : p.crop + p.length] * p.gain
    peak = float(np.max(np.abs(mix)))
    return (mix * min(1.0, MAX_PEAK / peak) if peak > 0 else mix).astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_waves(sources_dir: str, rate: int) -> dict[str, np.ndarray]:
    """{video_id: samples} of every clip of a sources build (read once per process, by the workers too)."""
    import io

    import pyarrow.parquet as pq
    import soundfile

    from .shards import DATA_DIR

    waves = {}
    for shard in sorted((Path(sources_dir) / DATA_DIR).glob("*.parquet")):
        for row in pq.read_table(shard, columns=["video_id", "audio"]).to_pylist():
            wave, file_rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
            if file_rate != rate:
                raise ValueError(f"{shard}: clip {row['video_id']} is at {file_rate} Hz, the build at {rate} Hz")
            waves[row["video_id"]] = wave
    return waves


def mixture_row(task: MixtureTask, sources_dir: str, rate: int) -> dict:
    """The dataset row of one planned mixture (a worker function: loads the sources once per process)."""
    flac = encode_flac(render(task, load_waves(sources_dir, rate)), rate)
    sources = ";".join(p.recording for p in task.placements)
    return audio_row(task.video_id, flac, task.labels, task.human_labels, source=sources, licence=task.licences)
