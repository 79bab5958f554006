"""PaSST, the Patchout faSt Spectrogram Transformer (Koutini et al., Interspeech 2022), as an SPA backbone.

A native port of kkoutini/PaSST (and its `hear21passt` package) without timm. The modules keep the names of the
released checkpoints, so a release file is a plain state dict that loads as it is (`strict`), with no renaming:
`cls_token`, `dist_token`, `new_pos_embed` (added to those two tokens), `freq_new_pos_embed` (1, C, F', 1) and
`time_new_pos_embed` (1, C, 1, T'), `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2}`, `norm`, the AudioSet `head` (LayerNorm + Linear) and `head_dist` (stored, unused, as in PaSST).

Forward: log-mel (B, frames, mels) -> (B, 1, mels, frames) -> overlapping 16x16 patches (stride 10) -> (B, C, F', T')
+ time and frequency position embeddings -> structured patchout (training only) -> tokens flattened frequency-major
(token f * T' + t) -> [cls, dist, patches] -> pre-norm ViT blocks -> final norm. The pooled embedding is the mean of
the cls and distillation tokens (C = 768); the original AudioSet logits are `head(pooled)`.

Frames and the time table. The time table has T' positions (99 for the 10 s releases, read from the file). Inputs
with fewer time patches use its first columns in eval and a random offset in training (PaSST's rule); longer inputs
raise in eval and are cropped to the table in training. Inside SPA the front-end always delivers `max_length`
frames (`BackboneSpec.max_frames`; `SPAConfig` checks that the front-end's `max_frames` equals it) and
`PaSSTConfig` refuses a `max_length` whose patches the table does not cover, so nothing is cropped silently; longer
clips are cut into windows by the model (`modeling_spa.windowing`). Frames that are padding (`frame_mask`) are
masked out of attention: a patch column is attended only when all its frames are real (at least the first column
is), so a clip padded in a batch gives what PaSST gives for its features alone; in eval the columns that no clip
fills are dropped before the blocks, so a short clip costs only its own patches. Attention runs through
`scaled_dot_product_attention`; with `output_attentions` the weights are computed explicitly.

LoRA (PEFT): `target_modules=["attn.qkv", "attn.proj"]` (the attention projections; plain `"proj"` would also match
the patch embedding's `patch_embed.proj` Conv2d); add `"mlp.fc1", "mlp.fc2"` for the MLPs.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

logger = logging.getLogger(__name__)

# The front-end preset of each STFT hop PaSST was released with (the v0.0.3 "stfthop" releases use 160 and 100).
FRONTEND_OF_HOP = {320: "passt", 160: "passt_hop160", 100: "passt_hop100"}


class PaSSTConfig(PreTrainedConfig):
    """Configuration of the PaSST backbone; the defaults are PaSST-S of the default release (`passt-s-swa-ap476`).

    Args:
        num_mel_bins: mel bins of the input features (128 for every release).
        max_length: frames per input, the front-end's `max_frames` (1000: 10 s at 32 kHz, hop 320). Its time
            patches, (max_length - patch_size) // time_stride + 1, must fit in the time table.
        patch_size: square patch side (16).
        frequency_stride, time_stride: patch strides (10; 12, 14, 16 in other releases).
        time_positions: length of the time table; None: the time patches of `max_length` (99 for 1000 frames).
            The 20 s / 30 s releases have 200 / 300, the hop-160 / hop-100 releases 200 / 320.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the ViT (PaSST-S: 768, 12, 12,
            3072; PaSST-L: depth 7).
        layer_norm_eps: of the blocks and the final norm (1e-6); head_layer_norm_eps: of the head's LayerNorm (1e-5).
        audioset_classes: outputs of the original head (527).
        hidden_dropout_prob, attention_probs_dropout_prob, drop_path_rate: dropout after the embeddings and in the
            blocks, attention dropout, stochastic depth (PaSST's AudioSet training: all 0).
        time_patchout, frequency_patchout: structured patchout in training: time columns and frequency rows of the
            patch grid removed per batch (PaSST on AudioSet: 40 and 4); at most all but one are removed.
        unstructured_patchout: patches removed at random after that (PaSST-U; 0).
        frontend_hop_length: STFT hop of the front-end the weights were trained with (320; 160 / 100 for the
            "stfthop" releases); it picks the front-end preset (`passt`, `passt_hop160`, `passt_hop100`).
    """

    model_type = "spa_passt"

    num_mel_bins: int = 128
    max_length: int = 1000
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    time_positions: int | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-6
    head_layer_norm_eps: float = 1e-5
    audioset_classes: int = 527
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    time_patchout: int = 40
    frequency_patchout: int = 4
    unstructured_patchout: int = 0
    frontend_hop_length: int = 320

    def __post_init__(self, **kwargs):
        if self.patch_size > min(self.num_mel_bins, self.max_length):
            raise ValueError(
                f"patch_size={self.patch_size} needs at least that many mel bins ({self.num_mel_bins}) and frames "
                f"(max_length={self.max_length})."
            )
        if min(self.frequency_stride, self.time_stride) < 1:
            raise ValueError("frequency_stride and time_stride must be positive.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is no multiple of {self.num_attention_heads} heads.")
        if min(self.time_patchout, self.frequency_patchout, self.unstructured_patchout) < 0:
            raise ValueError("patchout counts must not be negative.")
        if self.frontend_hop_length not in FRONTEND_OF_HOP:
            raise ValueError(
                f"frontend_hop_length={self.frontend_hop_length}: PaSST front-end presets exist for hops "
                f"{sorted(FRONTEND_OF_HOP)}."
            )
        if self.time_positions is None:
            self.time_positions = self.time_patches(self.max_length)
        if self.time_patches(self.max_length) > self.time_positions:
            raise ValueError(
                f"max_length={self.max_length} frames make {self.time_patches(self.max_length)} time patches, but the "
                f"time table has {self.time_positions} positions: use at most {self.max_frames_covered} frames."
            )
        super().__post_init__(**kwargs)

    def time_patches(self, frames: int) -> int:
        return (frames - self.patch_size) // self.time_stride + 1

    @property
    def frequency_positions(self) -> int:
        return (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1

    @property
    def max_frames_covered(self) -> int:
        """The most frames whose time patches all have a position in the table."""
        return (self.time_positions - 1) * self.time_stride + self.patch_size + self.time_stride - 1

    @property
    def frontend_preset(self) -> str:
        return FRONTEND_OF_HOP[self.frontend_hop_length]


# Registered so that AutoConfig resolves the sub-config of saved PaSST models (exist_ok: a checkpoint's remote-code
# copy of this file may be imported next to the installed package).
AutoConfig.register(PaSSTConfig.model_type, PaSSTConfig, exist_ok=True)


class PaSSTPatchEmbed(nn.Module):
    """(B, frames, mels) -> (B, C, F', T'): the spectrogram as a one-channel image, mels as height, cut into
    overlapping patches by one strided convolution."""

    def __init__(self, config: PaSSTConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            1,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=(config.frequency_stride, config.time_stride),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features.transpose(1, 2).unsqueeze(1))


class PaSSTAttention(nn.Module):
    def __init__(self, config: PaSSTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, channels = hidden.shape
        query, key, value = (
            self.qkv(hidden).view(batch, tokens, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4).unbind(0)
        )
        dropout = self.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:  # SDPA does not return the weights: compute them explicitly
            scores = (query * self.head_size**-0.5) @ key.transpose(-2, -1)
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            context = nn.functional.dropout(weights, dropout, self.training) @ value
        else:
            context = nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout
            )
        context = context.transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_dropout(self.proj(context)), weights


class PaSSTMlp(nn.Module):
    def __init__(self, config: PaSSTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(hidden)))))


def drop_path(hidden: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch of whole samples, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return hidden
    keep = hidden.new_empty(hidden.shape[0], *([1] * (hidden.dim() - 1))).bernoulli_(1.0 - rate)
    return hidden * keep / (1.0 - rate)


class PaSSTBlock(GradientCheckpointingLayer):  # checkpointed when gradient checkpointing is on
    """Pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, config: PaSSTConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = PaSSTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PaSSTMlp(config)
        self.drop_path_rate = drop_path_rate

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(hidden), attention_mask, output_attentions)
        hidden = hidden + drop_path(attended, self.drop_path_rate, self.training)
        hidden = hidden + drop_path(self.mlp(self.norm2(hidden)), self.drop_path_rate, self.training)
        return hidden, weights


class PaSSTBackbone(nn.Module):
    """(B, frames, mels) log-mel + frame mask -> (B, hidden_size) pooled PaSST embedding.

    `hidden_states` are the token sequences (B, 2 + patches, hidden_size) after the embeddings and after each block
    (before the final norm), `attentions` each block's attention weights (B, heads, tokens, tokens); with patchout
    (training) the sequences are the shorter ones that the blocks saw.
    """

    _no_split_modules = ["PaSSTBlock"]
    # The original AudioSet head: off the SPA path, frozen for training (see `SPAForAudioClassification`).
    audioset_head_modules = ("head", "head_dist")

    def __init__(self, config: PaSSTConfig):
        super().__init__()
        self.config = config
        channels = config.hidden_size
        self.patch_embed = PaSSTPatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, channels))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, channels))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, channels))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, channels, config.frequency_positions, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, channels, 1, config.time_positions))
        tables = (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed, self.time_new_pos_embed)
        for table in tables:
            nn.init.trunc_normal_(table, std=0.02)  # PaSST's own init of its tokens and position tables
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        depth = config.num_hidden_layers  # stochastic depth rising linearly from 0 (plain floats: meta-safe)
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(PaSSTBlock(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.head = nn.Sequential(
            nn.LayerNorm(channels, eps=config.head_layer_norm_eps), nn.Linear(channels, config.audioset_classes)
        )
        self.head_dist = nn.Linear(channels, config.audioset_classes)

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        hidden, attention_mask = self.embed(features, frame_mask)
        hidden_states, attentions = [hidden], []
        for block in self.blocks:
            hidden, weights = block(hidden, attention_mask, output_attentions)
            hidden_states.append(hidden)
            attentions.append(weights)
        hidden = self.norm(hidden)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=(hidden[:, 0] + hidden[:, 1]) / 2,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def audioset_logits(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The original head's (B, 527) logits: PaSST's own output."""
        return self.head(self(features, frame_mask).pooler_output)

    def audioset_scores(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.audioset_logits(features, frame_mask).sigmoid()

    def embed(
        self, features: torch.Tensor, frame_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The token sequence (B, 2 + patches, C) and its attention mask (B, 1, 1, tokens), None without a
        frame mask."""
        config = self.config
        if features.dim() != 3 or features.shape[-1] != config.num_mel_bins:
            raise ValueError(
                f"PaSST takes log-mel features (batch, frames, {config.num_mel_bins}), got {tuple(features.shape)}."
            )
        if features.shape[1] < config.patch_size:
            raise ValueError(f"PaSST needs at least {config.patch_size} frames, got {features.shape[1]}.")
        grid = self.patch_embed(features)
        columns = self._real_columns(frame_mask, grid.shape[-1])
        tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()  # shapes must not depend on the data
        if not self.training and columns is not None and not tracing:
            # Columns that no clip of the batch fills are masked anyway: leave them out (a short clip then costs
            # what its own patches cost). In training they stay, as in PaSST: patchout counts assume the full grid.
            used = int(columns.sum(dim=1).max())
            grid, columns = grid[..., :used], columns[:, :used]
        grid, columns = self._fit_time_table(grid, columns)
        grid = grid + self._time_positions(grid.shape[-1]) + self.freq_new_pos_embed
        if self.training:
            grid, columns = self._structured_patchout(grid, columns)
        batch, _, rows, _ = grid.shape
        patches = grid.flatten(2).transpose(1, 2)  # frequency-major: token f * T' + t
        valid = None if columns is None else columns[:, None, :].expand(-1, rows, -1).reshape(batch, -1)
        if self.training and config.unstructured_patchout:
            keep = self._kept(patches.shape[1], config.unstructured_patchout, patches.device)
            patches, valid = patches[:, keep], None if valid is None else valid[:, keep]
        return self._sequence(patches, valid)

    def _sequence(self, patches: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[cls, dist, patches] with their attention mask; the two tokens are always attended (no empty row)."""
        batch = patches.shape[0]
        cls_token = (self.cls_token + self.new_pos_embed[:, :1]).expand(batch, -1, -1)
        dist_token = (self.dist_token + self.new_pos_embed[:, 1:]).expand(batch, -1, -1)
        tokens = self.dropout(torch.cat((cls_token, dist_token, patches), dim=1))
        if valid is None:
            return tokens, None
        return tokens, nn.functional.pad(valid, (2, 0), value=True)[:, None, None, :]

    def _real_columns(self, frame_mask: torch.Tensor | None, columns: int) -> torch.Tensor | None:
        """(B, T') True for the patch columns whose frames are all real audio (at least the first column)."""
        if frame_mask is None:
            return None
        real = self.config.time_patches(frame_mask.sum(dim=1)).clamp_min(1)
        return torch.arange(columns, device=frame_mask.device) < real[:, None]

    def _fit_time_table(
        self, grid: torch.Tensor, columns: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        positions = self.config.time_positions
        if grid.shape[-1] <= positions:
            return grid, columns
        if not self.training:
            raise ValueError(
                f"{grid.shape[-1]} time patches, but PaSST's time table has {positions} positions (at most "
                f"{self.config.max_frames_covered} frames): cut longer inputs into windows (SPA's model does so)."
            )
        # As PaSST's training: the patches beyond the table are dropped.
        logger.warning("PaSST: %d time patches cropped to the %d of the time table.", grid.shape[-1], positions)
        return grid[..., :positions], None if columns is None else columns[:, :positions]

    def _time_positions(self, columns: int) -> torch.Tensor:
        """The table columns for `columns` patches: the first ones in eval, from a random offset in training."""
        positions = self.config.time_positions
        offset = 0
        if self.training and columns < positions:
            offset = int(torch.randint(positions - columns + 1, ()).item())
        return self.time_new_pos_embed[..., offset : offset + columns]

    def _structured_patchout(
        self, grid: torch.Tensor, columns: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Remove one random set of time columns and frequency rows, the same for the whole batch."""
        if self.config.time_patchout:
            keep = self._kept(grid.shape[-1], self.config.time_patchout, grid.device)
            grid = grid[..., keep]
            columns = None if columns is None else columns[:, keep]
        if self.config.frequency_patchout:
            grid = grid[:, :, self._kept(grid.shape[2], self.config.frequency_patchout, grid.device)]
        return grid, columns

    @staticmethod
    def _kept(size: int, removed: int, device: torch.device) -> torch.Tensor:
        """Sorted indices of the `size - removed` items kept (at least one)."""
        kept = max(size - removed, 1)
        return torch.randperm(size, device=device)[:kept].sort().values


__all__ = ["PaSSTBackbone", "PaSSTConfig"]
