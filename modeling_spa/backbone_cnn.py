"""A small VGG-style CNN over log-mel frames (PANN CNN-style pooling) that trains from scratch on a CPU.

It is the demo backbone: four double-convolution blocks, frequency mean, then mean + max over time (PANNs'
clip-level pooling), which gives a `hidden_sizes[-1]`-dim pooled embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig


class SPACNNConfig(PreTrainedConfig):
    """Configuration of the small demo CNN.

    Args:
        num_mel_bins: mel bins of the input features.
        hidden_sizes: channels of each convolution block; each block halves time and frequency.
        dropout: dropout on the pooled embedding.
    """

    model_type = "spa_cnn"

    num_mel_bins: int = 128
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    dropout: float = 0.1

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive channel counts, got {self.hidden_sizes}.")
        super().__post_init__(**kwargs)


# SPAConfig's sub-config spec names "spa_cnn" as its default type, which transformers resolves through AutoConfig.
# exist_ok: a checkpoint's remote-code copy of this file may be imported next to the installed package.
AutoConfig.register(SPACNNConfig.model_type, SPACNNConfig, exist_ok=True)


class SPACNNBlock(nn.Module):
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


class SPACNNBackbone(nn.Module):
    """(B, frames, mels) log-mel + frame mask -> (B, hidden_sizes[-1]) pooled embedding."""

    def __init__(self, config: SPACNNConfig):
        super().__init__()
        channels = [1, *config.hidden_sizes]
        self.input_norm = nn.BatchNorm2d(config.num_mel_bins)
        self.blocks = nn.ModuleList(SPACNNBlock(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Per-mel-bin batch norm (PANNs' bn0) absorbs the feature scale, so no dataset statistics are needed.
        hidden = self.input_norm(features.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        hidden = hidden.unsqueeze(1)
        for block in self.blocks:
            hidden = block(hidden)
        hidden = hidden.mean(dim=3)  # (B, C, frames')
        if frame_mask is None:
            return self.dropout(hidden.mean(dim=2) + hidden.amax(dim=2))
        # Frames that are only padding must not enter the time pooling: pool the mask as each block pools time.
        mask = frame_mask[:, None].float()
        for _ in self.blocks:
            mask = nn.functional.max_pool1d(mask, 2, ceil_mode=True)
        mask = mask > 0
        mean = (hidden * mask).sum(dim=2) / mask.sum(dim=2).clamp_min(1)
        peak = hidden.masked_fill(~mask, torch.finfo(hidden.dtype).min).amax(dim=2)
        return self.dropout(mean + peak)
