"""Clips longer than the model's window: window positions and score aggregation.

One rule serves the model at inference (`SPAForAudioClassification.forward`, and so the audio-classification
pipeline), `spa-tag` and the exported tagger, so all give the same scores for the same clip. The two taggers stream
files: `data.audio_files.stream_windows` cuts the windows of `window_starts` as the samples arrive (it lives there
because the exported tagger must stand alone; tests/model/test_windowing.py checks that both cut the same windows).

- Positions: a clip of N samples, window W, hop H has windows starting at 0, H, 2H, ... as long as they fit, and,
  when the last of them stops short of the end, one more that ends at the end (starts at N - W). Every window of
  a clip longer than W is therefore full-length: a short tail is merged into an end-aligned window, never scored
  alone. A clip of at most W samples is one window.
- Aggregation: `mean` of the windows' sigmoid scores, weighted by the real samples of each window (the default),
  or `max`. The aggregate is returned as a logit, so `sigmoid(logits)` stays the clip's score.
- Window length: `SPAConfig.window_length_s`; None derives it: for a front-end with a fixed `max_frames` (AST,
  PaSST, HTS-AT; Whisper: its 30 s) the longest clip those frames hold, so a fixed-length backbone never sees more
  frames than it was built for; otherwise 10 s (`recipes/train.py` records its training clip length instead). The hop
  (`window_hop_s`) defaults to the window length: no overlap, each sample scored once except where the
  end-aligned window overlaps its predecessor.

This module imports neither soundfile nor the data code: it travels with the model's remote code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

AGGREGATIONS = ("mean", "max")
DEFAULT_WINDOW_S = 10.0
WINDOWS_PER_BATCH = 16
# float64 probabilities are kept in [1e-12, 1 - 1e-12] before the logit, which stays within about ±27.6.
PROBABILITY_EPS = 1e-12


@dataclass(frozen=True)
class WindowSettings:
    """Window length and hop in samples at the model's rate, and the aggregation."""

    length: int
    hop: int
    aggregation: str


def frontend_span(frontend: dict) -> int | None:
    """The longest clip, in samples, whose frames all fit in the front-end's `max_frames` (None: no limit).

    Centred framing gives 1 + N // hop frames, so `max_frames` frames hold max_frames * hop - 1 samples. Kaldi
    framing gives 1 + (N - win_length) // hop frames; samples after the end of the last whole frame belong to no
    frame, so the span stops there. Signal-level pre-emphasis drops one sample first. A front-end that pads or crops
    the waveform itself to `max_samples` (Whisper's 30 s) spans exactly those.
    """
    if frontend.get("max_samples") is not None:
        return frontend["max_samples"]
    frames = frontend.get("max_frames")
    if frames is None:
        return None
    dropped = int(bool(frontend.get("preemphasis")) and not frontend.get("preemphasis_per_frame"))
    if frontend.get("center", True):
        return frames * frontend["hop_length"] - 1 + dropped
    return (frames - 1) * frontend["hop_length"] + frontend["win_length"] + dropped


def window_settings(config, hop_s: float | None = None, aggregation: str | None = None) -> WindowSettings:
    """The window of an `SPAConfig` (see the module docstring); `hop_s` and `aggregation` override the config's."""
    rate = config.frontend["sampling_rate"]
    span = frontend_span(config.frontend)
    if config.window_length_s is not None:
        length = round(config.window_length_s * rate)
    else:
        length = span if span is not None else round(DEFAULT_WINDOW_S * rate)
    if length <= 0:
        raise ValueError(f"window_length_s must be positive, got {config.window_length_s}")
    if span is not None and length > span:
        raise ValueError(
            f"window_length_s={config.window_length_s} is {length} samples, more than the {span} that the "
            f"front-end's max_frames={config.frontend['max_frames']} hold; use at most {span / rate:.4f} s or None"
        )
    hop_s = config.window_hop_s if hop_s is None else hop_s
    hop = length if hop_s is None else round(hop_s * rate)
    if not 0 < hop <= length:
        raise ValueError(f"The window hop must be positive and at most the window ({length / rate} s), got {hop_s} s")
    aggregation = config.window_aggregation if aggregation is None else aggregation
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"Window aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    return WindowSettings(length, hop, aggregation)


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start positions of the windows of a clip of `num_samples` samples (see the module docstring)."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def aggregate_logits(logits: torch.Tensor, weights: Sequence[float] | torch.Tensor, aggregation: str) -> torch.Tensor:
    """One clip's logits (num_labels,) from its windows' logits (windows, num_labels).

    `max` takes the largest logit (the sigmoid is monotonic, so it is the largest score). `mean` averages the
    sigmoid scores weighted by `weights` (the real samples of each window), in float64, and returns the logit of
    that mean, clamped so that it stays finite. One window is returned unchanged.
    """
    if logits.shape[0] == 1:
        return logits[0]
    if aggregation == "max":
        return logits.max(dim=0).values
    if aggregation != "mean":
        raise ValueError(f"Window aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    weights = torch.as_tensor(weights, dtype=torch.float64, device=logits.device)
    mean = (logits.double().sigmoid() * weights[:, None]).sum(dim=0) / weights.sum()
    return torch.logit(mean, eps=PROBABILITY_EPS).to(logits.dtype)


def aggregate_embeds(embeds: torch.Tensor, weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """One clip's audio embedding (D,) from its windows' (windows, D): their mean weighted by `weights` (the real
    samples of each window), in float64, whatever the scores' aggregation (an embedding has no "max")."""
    weights = torch.as_tensor(weights, dtype=torch.float64, device=embeds.device)
    return embeds.double().mul(weights[:, None]).sum(dim=0).div(weights.sum()).to(embeds.dtype)


def _window_spans(
    input_values: torch.Tensor, attention_mask: torch.Tensor | None, settings: WindowSettings
) -> tuple[list[int], list[tuple[int, int]]]:
    """Each row's real length (from the mask) and the (row, start) of every window of every row."""
    if attention_mask is None:
        lengths = [input_values.shape[-1]] * input_values.shape[0]
    else:
        lengths = attention_mask.long().sum(dim=-1).tolist()
    spans = [(row, start) for row, n in enumerate(lengths) for start in window_starts(n, settings.length, settings.hop)]
    return lengths, spans


def _window_batches(
    input_values: torch.Tensor, attention_mask: torch.Tensor | None, spans: list[tuple[int, int]], length: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The windows of `spans` as (values, mask) batches of at most `WINDOWS_PER_BATCH` windows."""
    for first in range(0, len(spans), WINDOWS_PER_BATCH):
        chunk = spans[first : first + WINDOWS_PER_BATCH]
        values = torch.stack([input_values[row, start : start + length] for row, start in chunk])
        mask = None
        if attention_mask is not None:
            mask = torch.stack([attention_mask[row, start : start + length] for row, start in chunk])
        yield values, mask


Aggregate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def in_windows(
    run: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, ...]],
    input_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    settings: WindowSettings,
    aggregates: Sequence[Aggregate],
) -> tuple[torch.Tensor, ...]:
    """Per-clip outputs of clips longer than the window, the one windowing rule of every entry point.

    Each row (its real length from the mask) is cut into windows (`window_starts`), the windows of all rows go
    through `run(values, mask)` in batches of `WINDOWS_PER_BATCH`, and output i of a row's windows is reduced by
    `aggregates[i](outputs, weights)`, the weights being each window's real samples. Every window is
    `settings.length` samples long, so a model called by `run` does not window again.
    """
    lengths, spans = _window_spans(input_values, attention_mask, settings)
    batches = [run(values, mask) for values, mask in _window_batches(input_values, attention_mask, spans,
                                                                     settings.length)]  # fmt: skip
    outputs = [torch.cat(parts) for parts in zip(*batches, strict=True)]
    rows = torch.tensor([row for row, _ in spans], device=outputs[0].device)
    clips = [[] for _ in outputs]
    for row, n in enumerate(lengths):
        mine = rows == row
        # Every window of a row holds min(n, length) real samples: those of a longer clip are all full-length.
        weights = torch.full((int(mine.sum()),), float(min(n, settings.length)), dtype=torch.float64,
                             device=rows.device)  # fmt: skip
        for clip, output, aggregate in zip(clips, outputs, aggregates, strict=True):
            clip.append(aggregate(output[mine], weights))
    return tuple(torch.stack(clip) for clip in clips)


def forward_in_windows(
    model, input_values: torch.Tensor, attention_mask: torch.Tensor | None, settings: WindowSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and audio embeddings of clips longer than the window (`in_windows`): logits aggregated by
    `settings.aggregation`, embeddings by their mean weighted by the real samples of each window."""

    def run(values: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        output = model(input_values=values, attention_mask=mask)
        return output.logits, output.audio_embeds

    def logits(window_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return aggregate_logits(window_logits, weights, settings.aggregation)

    return in_windows(run, input_values, attention_mask, settings, (logits, aggregate_embeds))


def probabilities_in_windows(
    score: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    input_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    settings: WindowSettings,
) -> torch.Tensor:
    """Clip probabilities (batch, classes) from `score(values, mask)`, a function giving window probabilities (such
    as the backbone's original AudioSet head): the windows of `in_windows`, aggregated as logits are (`mean`: the
    windows of a clip all hold the same number of real samples, so their weighted mean is the mean). A batch no
    longer than one window is scored as it is."""
    if input_values.shape[-1] <= settings.length:
        return score(input_values, attention_mask)
    if settings.aggregation not in AGGREGATIONS:
        raise ValueError(f"Window aggregation must be one of {AGGREGATIONS}, got {settings.aggregation!r}")

    def aggregate(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if settings.aggregation == "max":
            return scores.max(dim=0).values
        return (scores.double() * weights[:, None]).sum(dim=0).div(weights.sum()).to(scores.dtype)

    return in_windows(lambda values, mask: (score(values, mask),), input_values, attention_mask, settings,
                      (aggregate,))[0]  # fmt: skip


__all__ = [
    "AGGREGATIONS",
    "WindowSettings",
    "aggregate_embeds",
    "aggregate_logits",
    "forward_in_windows",
    "frontend_span",
    "in_windows",
    "probabilities_in_windows",
    "window_settings",
    "window_starts",
]
