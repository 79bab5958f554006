"""The demo CNN: a small VGG-style CNN over log-mel frames (PANN-style pooling) that trains from scratch on a CPU.

It is no backbone of the paper (those load AudioSet-pretrained checkpoints); it exists for the offline demo and
the tests: four double-convolution blocks, frequency mean, then mean + max over time (PANNs'
clip-level pooling), which gives a `hidden_sizes[-1]`-dim pooled embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling


class DemoCNNConfig(PreTrainedConfig):
    """Configuration of the small demo CNN.

    Args:
        num_mel_bins: mel bins of the input features.
        hidden_sizes: channels of each convolution block; each block halves time and frequency.
        dropout: dropout on the pooled embedding.
    """

    model_type = "spa_demo_cnn"

    num_mel_bins: int = 64  # the `tiny` front-end
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    dropout: float = 0.1

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive channel counts, got {self.hidden_sizes}.")
        super().__post_init__(**kwargs)


# Registered so that AutoConfig resolves the sub-config of saved demo models. exist_ok: a checkpoint's remote-code
# copy of this file may be imported next to the installed package.
AutoConfig.register(DemoCNNConfig.model_type, DemoCNNConfig, exist_ok=True)


class DemoCNNBlock(GradientCheckpointingLayer):  # checkpointed when gradient checkpointing is on
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.norm1(self.conv1(hidden)))
        hidden = self.act(self.norm2(self.conv2(hidden)))
        return self.pool(hidden)


class DemoCNNBackbone(nn.Module):
    """(B, frames, mels) log-mel + frame mask -> (B, hidden_sizes[-1]) pooled embedding.

    `hidden_states` are the feature maps (B, channels, frames, mels), as for transformers' CNNs: the normalised
    log-mel (one channel), then each block's output (time and frequency halved by each). No attention: `attentions`
    is None.
    """

    def __init__(self, config: DemoCNNConfig):
        super().__init__()
        channels = [1, *config.hidden_sizes]
        self.input_norm = nn.BatchNorm2d(config.num_mel_bins)
        self.blocks = nn.ModuleList(DemoCNNBlock(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        # Per-mel-bin batch norm (PANNs' bn0) absorbs the feature scale, so no dataset statistics are needed.
        hidden = self.input_norm(features.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        hidden = hidden.unsqueeze(1)
        hidden_states = [hidden]
        for block in self.blocks:
            hidden = block(hidden)
            hidden_states.append(hidden)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=self.dropout(self._pool(hidden.mean(dim=3), frame_mask)),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )

    def _pool(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, C, frames') -> (B, C): mean + max over the frames of real audio."""
        if frame_mask is None:
            return hidden.mean(dim=2) + hidden.amax(dim=2)
        # Frames that are only padding must not enter the time pooling: pool the mask as each block pools time.
        mask = frame_mask[:, None].float()
        for _ in self.blocks:
            mask = nn.functional.max_pool1d(mask, 2, ceil_mode=True)
        mask = mask > 0
        mean = (hidden * mask).sum(dim=2) / mask.sum(dim=2).clamp_min(1)
        peak = hidden.masked_fill(~mask, torch.finfo(hidden.dtype).min).amax(dim=2)
        # A clip without a single real frame (shorter than one window) pools to zeros, not to -3.4e38.
        peak = torch.where(mask.any(dim=2), peak, 0.0)
        return mean + peak
