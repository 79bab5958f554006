"""Per-window scores to sound events (label, onset, offset, score): thresholds with hysteresis, a median filter,
a minimum gap and a minimum duration, so that one sound is one event however many overlapping windows saw it.

Pure numpy over (window start, window end, scores) triples; the model, files and streams are elsewhere
(`tagging.timeline`, `tagging.stream`). One implementation serves both: `EventTracker` takes windows one at a time
and hands back the events it has finished, and `detect_events` is that tracker fed a whole recording, so a stream and
an offline timeline of the same windows give the same events by construction.

Time. A window scores its whole span, but overlapping windows each see a sound, so an event drawn over whole windows
would start up to a window early and end up to a window late. Each window instead stands for the stretch of time
closer to its centre than to any other window's centre: window i owns [b_i, b_{i+1}) with b_i the midpoint of the
centres of windows i-1 and i, the first window from the recording's start, the last one to its end. With a hop H
that is the middle H of each window (the end-aligned last window of `windowing.window_starts` owns less).

Rules, in this order (as in the DCASE baselines' post-processing):
1. median filter over `median_windows` consecutive windows (odd; the ends repeat the first/last window, as
   `scipy.ndimage.median_filter(mode="nearest")` does);
2. hysteresis per class: an event starts where the smoothed score reaches the class's `on` threshold and lasts until
   it drops below its `off` threshold (off <= on), so a dip between the two does not split a sound;
3. events of one class separated by less than `min_gap_s` are merged;
4. events shorter than `min_duration_s` are dropped (after merging, so the pieces of one sound count together).
An event's score is the highest smoothed score of its windows.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class EventRules:
    """Post-processing of per-window scores (see the module docstring). `off_ratio` sets each class's off threshold
    to off_ratio x its on threshold: 1 is a single threshold, 0.5 keeps an event until its score halves."""

    median_windows: int = 1
    off_ratio: float = 1.0
    min_duration_s: float = 0.0
    min_gap_s: float = 0.0

    def __post_init__(self):
        if self.median_windows < 1 or self.median_windows % 2 == 0:
            raise ValueError(f"median_windows must be an odd number >= 1 (a centred filter), got {self.median_windows}")
        if not 0 < self.off_ratio <= 1:
            raise ValueError(f"off_ratio must be in (0, 1] (the off threshold is at most the on one), got "
                             f"{self.off_ratio}")  # fmt: skip
        for name in ("min_duration_s", "min_gap_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")

    def latency_s(self, window_s: float, hop_s: float) -> float:
        """How much audio after an event's offset a stream needs before it can say the event is finished, at most:
        the window and the hop (the window that owns the offset ends up to (window + hop) / 2 later, and the
        resampler holds back a few milliseconds), plus half the median filter (it looks ahead) and the minimum gap
        (a sound starting again within it would continue the event), each rounded up to whole hops."""
        lookahead = (self.median_windows - 1) // 2 + math.ceil(self.min_gap_s / hop_s - 1e-9)
        return window_s + hop_s + lookahead * hop_s


@dataclass(frozen=True)
class Event:
    """One sound: the class's name, its AudioSet mid where known, onset and offset in seconds from the start of the
    recording, and the highest smoothed window score within it."""

    label: str
    onset: float
    offset: float
    score: float
    mid: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Open:
    onset: float
    offset: float
    score: float


def _thresholds(values, n: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim and array.shape != (n,):
        raise ValueError(f"{name} thresholds: one for all classes or one per class ({n}), got shape {array.shape}")
    array = np.broadcast_to(array, (n,)).copy()
    bad = ~((array >= 0) & (array <= 1))  # NaN too
    if bad.any():
        raise ValueError(f"{name} thresholds must be probabilities in [0, 1], got {array[bad][:3].tolist()}")
    return array


@dataclass
class EventTracker:
    """Events from windows given one at a time, in time order (`push`), finished at `close`.

    `labels` (and optionally `mids`) name the classes of the score vectors; `on` is each class's threshold (or one
    for all). `push` and `close` return the events finished by that window, in the order they were finished; every
    event is returned exactly once.
    """

    labels: Sequence[str]
    on: np.ndarray | float
    rules: EventRules = field(default_factory=EventRules)
    mids: Sequence[str] | None = None

    def __post_init__(self):
        n = len(self.labels)
        if self.mids is not None and len(self.mids) != n:
            raise ValueError(f"{n} labels but {len(self.mids)} mids")
        self.on = _thresholds(self.on, n, "on")
        self.off = self.on * self.rules.off_ratio
        self._radius = (self.rules.median_windows - 1) // 2
        self._raw: deque[np.ndarray] = deque()  # the raw windows the median filter still needs
        self._times: deque[float] = deque()  # b_j of the windows waiting for their median
        self._first: np.ndarray | None = None  # the first window, repeated before the start
        self._centre: float | None = None
        self._end = 0.0
        self._active: dict[int, _Open] = {}
        self._pending: dict[int, _Open] = {}  # ended, waiting to see whether the class comes back within min_gap_s
        self._closed = False

    def push(self, start: float, end: float, scores) -> list[Event]:
        """One window: its start and end (seconds from the recording's start) and its (classes,) scores."""
        if self._closed:
            raise ValueError("This EventTracker is closed: start a new one for a new recording")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(self.labels),):
            raise ValueError(f"A window's scores must have shape ({len(self.labels)},), got {scores.shape}")
        centre = (start + end) / 2
        if self._centre is not None and not centre > self._centre:
            raise ValueError(f"Windows must come in time order: a window centred at {centre} s after one at "
                             f"{self._centre} s")  # fmt: skip
        boundary = start if self._centre is None else (self._centre + centre) / 2
        self._centre, self._end = centre, end
        if self._first is None:
            self._first = scores
            self._raw.extend([scores] * self._radius)  # the "nearest" padding before the first window
        self._raw.append(scores)
        self._times.append(boundary)
        finished = []
        if len(self._raw) == 2 * self._radius + 1:
            finished = self._decide()
        return finished

    def close(self) -> list[Event]:
        """The recording has ended: the windows still waiting for the median filter are decided (the last window
        repeated after the end), open events end at the end of the last window, and every event left is finished."""
        if self._closed:
            return []
        finished = []
        while self._times:
            while len(self._raw) < 2 * self._radius + 1:  # the "nearest" padding after the last window
                self._raw.append(self._raw[-1])
            finished += self._decide()
        for index in sorted(self._active):
            finished += self._end_event(index, self._end, final=True)
        for index in sorted(self._pending):
            finished += self._finish(index)
        self._closed = True
        return finished

    def _decide(self) -> list[Event]:
        """Hysteresis for the window at the centre of the median filter's span."""
        smoothed = np.median(np.stack(self._raw), axis=0) if self._radius else self._raw[0]
        self._raw.popleft()
        time = self._times.popleft()
        finished = []
        for index in range(len(self.labels)):
            score = smoothed[index]
            event = self._active.get(index)
            if event is not None:
                if score < self.off[index]:
                    finished += self._end_event(index, time)
                else:
                    event.score = max(event.score, score)
            elif score >= self.on[index]:
                finished += self._start_event(index, time, score)
            else:
                finished += self._maybe_finish(index, time)
        return finished

    def _start_event(self, index: int, time: float, score: float) -> list[Event]:
        waiting = self._pending.pop(index, None)
        if waiting is not None and time - waiting.offset < self.rules.min_gap_s:
            waiting.score = max(waiting.score, score)  # the same sound after a short gap: one event
            self._active[index] = waiting
            return []
        self._active[index] = _Open(time, time, score)
        return self._finish_event(index, waiting)

    def _end_event(self, index: int, time: float, final: bool = False) -> list[Event]:
        event = self._active.pop(index)
        event.offset = time
        self._pending[index] = event
        return self._finish(index) if final else self._maybe_finish(index, time)

    def _maybe_finish(self, index: int, time: float) -> list[Event]:
        """A pending event is finished once no onset before its offset + min_gap_s can follow (time only grows)."""
        waiting = self._pending.get(index)
        if waiting is None or time - waiting.offset < self.rules.min_gap_s:
            return []
        return self._finish(index)

    def _finish(self, index: int) -> list[Event]:
        return self._finish_event(index, self._pending.pop(index))

    def _finish_event(self, index: int, event: _Open | None) -> list[Event]:
        if event is None or event.offset - event.onset < self.rules.min_duration_s:
            return []
        mid = self.mids[index] if self.mids is not None else None
        return [Event(self.labels[index], float(event.onset), float(event.offset), float(event.score), mid)]


def detect_events(
    starts: Sequence[float],
    ends: Sequence[float],
    scores: np.ndarray,
    labels: Sequence[str],
    on: np.ndarray | float,
    rules: EventRules | None = None,
    mids: Sequence[str] | None = None,
) -> list[Event]:
    """The events of one recording from all its windows: starts and ends in seconds, scores (windows, classes).
    Sorted by onset, then label."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or len(scores) != len(starts) or len(starts) != len(ends):
        raise ValueError(
            f"{len(starts)} starts, {len(ends)} ends and scores of shape {scores.shape}: one row per window"
        )
    tracker = EventTracker(labels, on, rules or EventRules(), mids)
    events = [event for row in zip(starts, ends, scores, strict=True) for event in tracker.push(*row)]
    return sort_events(events + tracker.close())


def sort_events(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.onset, e.label, e.offset))


def events_tsv(events: Iterable[Event]) -> str:
    """Audacity's label-track text (File > Import > Labels): onset, offset and label, tab-separated, one per line."""
    return "".join(f"{e.onset:.3f}\t{e.offset:.3f}\t{e.label}\n" for e in events)


def events_json(events: Iterable[Event], **extra) -> str:
    """{"events": [{label, onset, offset, score, mid}, ...], **extra} as indented JSON."""
    return json.dumps({**extra, "events": [event.to_dict() for event in events]}, indent=2)


__all__ = ["Event", "EventRules", "EventTracker", "detect_events", "events_json", "events_tsv", "sort_events"]
