"""A recording's timeline: its windows' scores, streamed from the file, and its events.

`file_window_scores` yields each window's start, end and sigmoid scores as the file is read (the package's one
reader and windowing: `data.audio_files`, `windowing`), at a hop that may be shorter than the window; memory stays at
a batch of windows whatever the file's length. `file_events` turns them into events (`tagging.events`), for the
model's classes or, with `level`, for the ontology nodes at that depth (`tagging.hierarchy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..data import BadAudioError
from ..data.audio_files import batches, too_short
from ..windowing import WINDOWS_PER_BATCH, window_settings
from .events import Event, EventRules, EventTracker, sort_events
from .files import file_windows
from .hierarchy import LabelHierarchy
from .scoring import forward_windows
from .thresholds import resolve_thresholds


@dataclass(frozen=True)
class WindowScores:
    """One window: start and end in seconds from the start of the recording, and its (classes,) sigmoid scores."""

    start: float
    end: float
    scores: np.ndarray


def window_probabilities(model, extractor, windows: list[np.ndarray]) -> np.ndarray:
    """(windows, classes) sigmoid scores of a batch of windows at the extractor's rate (the model's own, unwindowed:
    each window is at most the model's window long)."""
    return forward_windows(model, extractor, windows).logits.sigmoid().numpy()


def file_window_scores(
    path: str, model, extractor, hop_s: float | None = None, windows_per_batch: int = WINDOWS_PER_BATCH
) -> Iterator[WindowScores]:
    """Each window of an audio file with its scores, in time order: the model's window length, `hop_s` (default the
    model's `window_hop_s`) between starts, an end-aligned last window (`windowing.window_starts`).

    A file shorter than one analysis window of the model's front-end, empty or unreadable is a `BadAudioError`.
    """
    settings = window_settings(model.config, hop_s)
    rate, min_samples = extractor.sampling_rate, model.spa.frontend.min_samples
    seen = False
    for batch in batches(file_windows(path, rate, settings.length, settings.hop, with_starts=True), windows_per_batch):
        if len(batch[0][1]) < min_samples:  # only a whole file can be shorter than the window
            raise BadAudioError(path, too_short(len(batch[0][1]), rate, min_samples))
        scores = window_probabilities(model, extractor, [window for _, window in batch])
        for (start, window), row in zip(batch, scores, strict=True):
            yield WindowScores(start / rate, (start + len(window)) / rate, row)
        seen = True
    if not seen:  # an empty file, or one that resamples to nothing
        raise BadAudioError(path, too_short(0, rate, min_samples))


@dataclass(frozen=True)
class EventClasses:
    """What events are about: names (and mids) of the classes or ontology nodes, their on thresholds, and `project`,
    which maps a window's (classes,) model scores to theirs."""

    labels: list[str]
    mids: list[str] | None
    thresholds: np.ndarray
    project: Callable[[np.ndarray], np.ndarray]

    def tracker(self, rules: EventRules | None = None) -> EventTracker:
        return EventTracker(self.labels, self.thresholds, rules or EventRules(), self.mids)


def event_classes(
    config, threshold: str | float | Sequence[float] | None = "auto", level: int | None = None, ontology=None
) -> EventClasses:
    """The model's classes with their thresholds (`thresholds.resolve_thresholds`: "auto" is the checkpoint's); with
    `level`, the ontology nodes at that depth, each scored by its best class and thresholded by its classes' lowest
    threshold (`hierarchy`)."""
    thresholds = resolve_thresholds(config, threshold)
    if level is None:
        return EventClasses(config.label_names, config.label_mids, thresholds, lambda scores: scores)
    hierarchy = LabelHierarchy.for_model(config, ontology)
    nodes = hierarchy.level_nodes(level)
    members = [hierarchy.members[n] for n in nodes]
    return EventClasses(
        [hierarchy.node_names[n] for n in nodes],
        [hierarchy.node_mids[n] for n in nodes],
        hierarchy.node_thresholds(thresholds)[nodes],
        lambda scores: np.array([scores[m].max() for m in members]),
    )


def events_from_windows(windows: Iterator[WindowScores], classes: EventClasses, rules: EventRules | None = None):
    """The events of a recording's windows (`WindowScores`, in time order), sorted by onset."""
    tracker = classes.tracker(rules)
    events: list[Event] = []
    for window in windows:
        events += tracker.push(window.start, window.end, classes.project(window.scores))
    return sort_events(events + tracker.close())


def file_events(
    path: str,
    model,
    extractor,
    threshold: str | float | Sequence[float] | None = "auto",
    rules: EventRules | None = None,
    hop_s: float | None = None,
    level: int | None = None,
    ontology=None,
) -> list[Event]:
    """The events of an audio file (see the module docstring), sorted by onset. `threshold` is "auto" (the
    checkpoint's calibrated thresholds), a number or one per class; `rules` the post-processing
    (`events.EventRules`); `hop_s` the hop between windows (default the model's; a hop shorter than the window
    places onsets and offsets more finely); `level` an ontology depth for coarse events."""
    classes = event_classes(model.config, threshold, level, ontology)
    return events_from_windows(file_window_scores(path, model, extractor, hop_s), classes, rules)


__all__ = [
    "EventClasses",
    "WindowScores",
    "event_classes",
    "events_from_windows",
    "file_events",
    "file_window_scores",
    "window_probabilities",
]
