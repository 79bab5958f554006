"""Evaluating timelines: recordings laid end to end with silences and overlaps at known times, and event-based and
segment-based F1 computed by sed_eval (the DCASE challenges' evaluation toolbox), not by this package.

`compose_scene` places labelled recordings one after another: after a silence, or (with probability `overlap_p`)
starting while the previous one still sounds. A recording's reference events span its audible part (`active_span`:
from the first to the last 10 ms frame within `floor_db` of its loudest), once per label, so the padding and the
silence around a short recording are not counted as the sound. Used by `recipes/event_study.py`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .events import Event


@dataclass(frozen=True)
class Recording:
    """One labelled recording: an id, mono float32 samples and its labels (class names)."""

    id: str
    audio: np.ndarray
    labels: tuple[str, ...]


@dataclass
class Scene:
    """A composed recording at `rate`: its samples, the reference events (score 1) and where each recording went, as
    (recording id, start in seconds)."""

    audio: np.ndarray
    rate: int
    events: list[Event] = field(default_factory=list)
    placements: list[tuple[str, float]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.rate


def active_span(audio: np.ndarray, rate: int, floor_db: float = -40.0, frame_s: float = 0.01) -> tuple[float, float]:
    """Start and end (seconds) of the audible part: the first and last frame whose RMS is within `floor_db` of the
    loudest frame's. A silent recording is a ValueError."""
    frame = max(int(rate * frame_s), 1)
    count = -(-len(audio) // frame)
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[: len(audio)] = audio
    rms = np.sqrt((padded.reshape(count, frame) ** 2).mean(axis=1))
    if not rms.max() > 0:
        raise ValueError("a silent recording has no audible part")
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    return loud[0] * frame / rate, min((loud[-1] + 1) * frame, len(audio)) / rate


def compose_scene(
    recordings: Sequence[Recording],
    rate: int,
    rng: np.random.Generator,
    gap_s: tuple[float, float] = (0.5, 2.5),
    overlap_p: float = 0.3,
    lead_s: float = 1.0,
) -> Scene:
    """The recordings in the given order: each after a silence drawn uniformly from `gap_s`, or with probability
    `overlap_p` starting at a uniform 30-70 % of the previous one's audible part. `lead_s` of silence first and last.
    The sum is scaled down if it would clip."""
    placed, cursor, previous = [], lead_s, None
    for recording in recordings:
        first, last = active_span(recording.audio, rate)
        if previous is not None and rng.random() < overlap_p:
            prev_start, prev_first, prev_last = previous
            start = prev_start + prev_first + rng.uniform(0.3, 0.7) * (prev_last - prev_first) - first
        else:
            start = cursor + (rng.uniform(*gap_s) if previous is not None else 0.0)
        start = round(max(start, 0.0) * rate) / rate
        placed.append((recording, start, first, last))
        cursor = max(cursor, start + len(recording.audio) / rate)
        previous = (start, first, last)
    audio = np.zeros(round((cursor + lead_s) * rate), dtype=np.float32)
    scene = Scene(audio, rate)
    for recording, start, first, last in placed:
        offset = round(start * rate)
        audio[offset : offset + len(recording.audio)] += recording.audio
        scene.placements.append((recording.id, start))
        scene.events += [Event(label, start + first, start + last, 1.0) for label in recording.labels]
    peak = np.abs(audio).max()
    if peak > 1:
        audio /= peak
    scene.events.sort(key=lambda e: (e.onset, e.label))
    return scene


def sed_eval_scores(
    reference: dict[str, list[Event]],
    estimated: dict[str, list[Event]],
    labels: Sequence[str],
    collars_s: Sequence[float] = (0.2,),
    offset_fraction: float = 0.2,
    segment_s: float = 1.0,
) -> dict:
    """Event-based F1 at each collar (an estimated event matches a reference event of its label whose onset is within
    the collar and whose offset is within max(collar, `offset_fraction` x its length): with 0.2 s, the DCASE setting),
    under "event_based" keyed by the collar ("0.2"), and segment-based F1 (`segment_s` segments), micro ("overall")
    and macro (class-wise average), computed by sed_eval over recordings (`reference` and `estimated` map a
    recording's name to its events)."""
    try:
        with warnings.catch_warnings():  # dcase_util imports pkg_resources, deprecated (hence setuptools<81)
            warnings.simplefilter("ignore", UserWarning)
            import dcase_util
            import sed_eval
    except ImportError as err:
        raise ImportError("Scoring timelines needs sed_eval: pip install sed_eval==0.2.1 (the dev extra)") from err

    def container(events: dict[str, list[Event]]):
        rows = [{"filename": name, "event_label": e.label, "onset": e.onset, "offset": e.offset}
                for name, found in events.items() for e in found]  # fmt: skip
        return dcase_util.containers.MetaDataContainer(rows)

    event_based = {
        f"{collar:g}": sed_eval.sound_event.EventBasedMetrics(
            event_label_list=list(labels), t_collar=collar, percentage_of_length=offset_fraction
        )
        for collar in collars_s
    }
    segment_based = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels), time_resolution=segment_s)
    for name in reference:
        truth, guess = container({name: reference[name]}), container({name: estimated.get(name, [])})
        for metrics in (*event_based.values(), segment_based):
            metrics.evaluate(reference_event_list=truth, estimated_event_list=guess)
    return {
        "event_based": {collar: _summary(metrics) for collar, metrics in event_based.items()},
        "segment_based": _summary(segment_based),
    }


def _summary(metrics) -> dict:
    overall, average = metrics.results_overall_metrics(), metrics.results_class_wise_average_metrics()
    return {
        "f1": overall["f_measure"]["f_measure"],
        "precision": overall["f_measure"]["precision"],
        "recall": overall["f_measure"]["recall"],
        "macro_f1": average["f_measure"]["f_measure"],
        "error_rate": overall["error_rate"]["error_rate"],
    }


__all__ = ["Recording", "Scene", "active_span", "compose_scene", "sed_eval_scores"]
