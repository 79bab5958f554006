"""Tagging audio as it arrives: chunks of any size in (a microphone callback, a socket), window scores and finished
events out, with a stated latency.

```python
stream = EventStream(model, extractor, sampling_rate=44100, threshold="auto", hop_s=0.5)
for chunk in chunks:                      # float samples, (frames,) or (frames, channels), any length
    for item in stream.feed(chunk):
        ...                               # WindowScores as each window completes; Event as each sound ends
for item in stream.close():               # the end of the audio: the last window(s) and the open events
    ...
```

Chunks are float samples in [-1, 1] at the `sampling_rate` given (PCM integers must be scaled first), mono or
(frames, channels) as soundfile and sounddevice give them; they are mixed to mono, resampled to the model's rate by a
soxr stream and cut into the model's windows by the cutter that files go through (`data.audio_files.WindowCutter`),
and the windows go through the same scoring and the same `EventTracker` as `timeline.file_events`. So the same audio
gives the same window scores and the same events, whatever the chunk sizes (tests/tagging/test_timeline.py checks it).

Latency: a window's scores come with the chunk that completes it; an event comes, finished, once the audio fed
reaches `latency_s` past its offset: the window and the hop (`EventRules.latency_s`; plus half the median filter and
the minimum gap, in hops, where those are set). Windows are scored as they complete, one model call per `feed`
that completes any: a faster-than-real-time model keeps up however small the chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.audio_files import WindowCutter, batches, too_short
from ..windowing import WINDOWS_PER_BATCH, window_settings
from .events import Event, EventRules
from .timeline import WindowScores, event_classes, window_probabilities


class EventStream:
    """Window scores and events of audio fed in chunks (see the module docstring).

    `threshold`, `rules`, `hop_s` and `level` are those of `timeline.file_events`. `latency_s`, `window_s` and
    `hop_s` state the timing; `received_s` is how much audio has been fed.
    """

    def __init__(
        self,
        model,
        extractor,
        sampling_rate: int,
        threshold: str | float | Sequence[float] | None = "auto",
        rules: EventRules | None = None,
        hop_s: float | None = None,
        level: int | None = None,
        ontology=None,
        windows_per_batch: int = WINDOWS_PER_BATCH,
    ):
        if not (isinstance(sampling_rate, (int, np.integer)) and sampling_rate > 0):
            raise ValueError(f"sampling_rate must be a positive whole number of Hz, got {sampling_rate!r}")
        self.model, self.extractor = model, extractor
        self.sampling_rate = int(sampling_rate)
        settings = window_settings(model.config, hop_s)
        rate = extractor.sampling_rate
        self.window_s, self.hop_s = settings.length / rate, settings.hop / rate
        self.rules = rules or EventRules()
        self.latency_s = self.rules.latency_s(self.window_s, self.hop_s)
        self.classes = event_classes(model.config, threshold, level, ontology)
        self._tracker = self.classes.tracker(self.rules)
        self._cutter = WindowCutter(self.sampling_rate, rate, settings.length, settings.hop)
        self._windows_per_batch = windows_per_batch
        self._frames = 0

    @property
    def received_s(self) -> float:
        """Seconds of audio fed so far."""
        return self._frames / self.sampling_rate

    def feed(self, chunk) -> list[WindowScores | Event]:
        """One chunk of audio; returns the windows it completed (`WindowScores`) and the events they finished
        (`Event`), in time order: each window, then the events it finished."""
        chunk = np.asarray(chunk)
        if chunk.dtype.kind != "f":
            raise ValueError(f"Chunks must hold float samples in [-1, 1], got {chunk.dtype} (scale PCM first, e.g. "
                             "int16 / 32768)")  # fmt: skip
        if chunk.ndim not in (1, 2):
            raise ValueError(f"A chunk is (frames,) or (frames, channels), got shape {chunk.shape}")
        if not np.isfinite(chunk).all():
            raise ValueError(f"Audio contains NaN or inf (in the chunk at {self.received_s:.3f} s)")
        self._frames += len(chunk)
        return self._score(self._cutter.push(chunk))

    def close(self) -> list[WindowScores | Event]:
        """The audio has ended: the last window(s), then every event still open or waiting (it ends at the end)."""
        windows = self._cutter.finish()
        if windows and len(windows[0][1]) < self.model.spa.frontend.min_samples:  # only the whole stream is shorter
            rate = self.extractor.sampling_rate
            raise ValueError(
                f"The stream is {too_short(len(windows[0][1]), rate, self.model.spa.frontend.min_samples)}"
            )
        return self._score(windows) + self._tracker.close()

    def _score(self, windows: list[tuple[int, np.ndarray]]) -> list[WindowScores | Event]:
        rate, items = self.extractor.sampling_rate, []
        for batch in batches(windows, self._windows_per_batch):
            scores = window_probabilities(self.model, self.extractor, [samples for _, samples in batch])
            for (start, samples), row in zip(batch, scores, strict=True):
                window = WindowScores(start / rate, (start + len(samples)) / rate, row)
                items.append(window)
                items += self._tracker.push(window.start, window.end, self.classes.project(row))
        return items


__all__ = ["EventStream"]
