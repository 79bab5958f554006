"""Windows to outputs, the two steps every tagging path shares: a batch of windows through the model
(`forward_windows`), and one file's window outputs aggregated as the model aggregates a long clip
(`aggregate_windows`, with `windowing.aggregate_logits` / `aggregate_embeds`). The one-file path (`files`) and the
collection pipeline (`pipeline`) both call them, so they give the same scores; they differ only in which windows
share a batch (float32 rounding of batched convolutions: about 1e-7 on a score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..windowing import aggregate_embeds, aggregate_logits


@dataclass
class WindowOutputs:
    """Per-window outputs, float32 on the CPU: logits (windows, classes), E_a (windows, D), the backbone's pooled
    embedding (windows, U)."""

    logits: torch.Tensor
    audio_embeds: torch.Tensor
    pooled_output: torch.Tensor

    def __len__(self) -> int:
        return len(self.logits)

    def rows(self, index) -> WindowOutputs:
        return WindowOutputs(self.logits[index], self.audio_embeds[index], self.pooled_output[index])

    @staticmethod
    def cat(parts: Sequence[WindowOutputs]) -> WindowOutputs:
        return WindowOutputs(*(torch.cat([getattr(p, name) for p in parts]) for name in WindowOutputs.fields()))

    @staticmethod
    def fields() -> tuple[str, str, str]:
        return ("logits", "audio_embeds", "pooled_output")


def forward_windows(model, extractor, windows: Sequence[np.ndarray]) -> WindowOutputs:
    """The model's outputs for a batch of windows at the extractor's rate, padded by the extractor's defaults as the
    audio-classification pipeline pads them. `model.spa` gives E_a and the pooled embedding, the classifier the logits:
    what `model(...)` computes, with the pooled embedding kept."""
    inputs = extractor(list(windows), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    with torch.inference_mode():
        output = model.spa(**inputs.to(model.device), return_dict=True)
        logits = model.classifier(output.audio_embeds)
    return WindowOutputs(logits.float().cpu(), output.audio_embeds.float().cpu(), output.pooled_output.float().cpu())


def aggregate_windows(
    outputs: WindowOutputs, weights: Sequence[int], aggregation: str
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """One file's sigmoid scores (classes,), E_a (D,) and pooled embedding (U,) from its windows' outputs: the scores
    by `aggregation`, the embeddings by their mean weighted by each window's real samples (`weights`)."""
    scores = aggregate_logits(outputs.logits, weights, aggregation).sigmoid().numpy()
    return scores, aggregate_embeds(outputs.audio_embeds, weights), aggregate_embeds(outputs.pooled_output, weights)


__all__ = ["WindowOutputs", "aggregate_windows", "forward_windows"]
