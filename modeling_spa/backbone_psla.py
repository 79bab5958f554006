"""PSLA (Gong, Chung & Glass, "PSLA: Improving Audio Tagging with Pretraining, Sampling, Labeling, and Aggregation",
TASLP 2021) as an SPA backbone: EfficientNet-B2 on the log-mel image, then PSLA's 4-head attention pooling.

Architecture (YuanGongND/psla, src/models/Models.py `EffNetAttention(b=2, head_num=4)`):
- The (B, 1056 frames, 128 mels) fbank is read as a one-channel image with frequency as height and time as width,
  (B, 1, 128, 1056). EfficientNet-B2 (efficientnet-pytorch 0.7.0, `in_channels=1`) turns it into a (B, 1408, 4, 33)
  feature map (`extract_features`: stem, 23 MBConv blocks, 1×1 head convolution, BatchNorm, swish).
- The trunk here is transformers' EfficientNet (the embeddings and encoder of `EfficientNetModel`, without its
  pooler, which PSLA does not use) with the B2 settings (`PSLAConfig`), made to compute what 0.7.0 computes. 0.7.0
  pads every convolution with a static, *symmetric* "same" padding worked out for `image_size` (260), which for the
  stem and the first stride-2 block (kernel 3, odd total padding 1) is one pixel on every side, where transformers
  (like efficientnet-pytorch 0.7.1) pads only right and bottom (0, 1, 0, 1). The PSLA checkpoints were trained with
  0.7.0; with transformers' padding the same weights give another feature map (in the tests the differences exceed
  the features themselves; with 0.7.0's padding they are ~1e-5). `PSLAEfficientNet`'s constructor derives 0.7.0's
  padding of every strided convolution from the config (`image_size`, strides, kernels), so it holds for any
  variant and survives `save_pretrained` / `from_pretrained` and remote code, which rebuild the module from the
  config.
- Training as 0.7.0 trains: every BatchNorm gets `batch_norm_momentum` in PyTorch's convention (0.01 = TensorFlow's
  0.99; transformers passes 0.99 to PyTorch, and leaves the expansion norms at 0.1), and the residual dropout becomes
  0.7.0's per-sample drop connect (transformers drops single elements). transformers' EfficientNet has no gradient
  checkpointing; here the blocks are `GradientCheckpointingLayer`s, so `model.gradient_checkpointing_enable()`
  recomputes them in the backward pass (which, as for any network with BatchNorm, updates the running statistics a
  second time).
- Original AudioSet head (`audioset_scores`, off the SPA path): the feature map averaged over its 4 frequency rows,
  (B, 1408, 33); for each of 4 heads h, att_h = clamp(sigmoid(1×1 conv), 1e-7, 1 - 1e-7) and cla_h = sigmoid(1×1
  conv), both (B, 527, 33), out_h = Σ_t (att_h / Σ_t att_h) · cla_h; scores = Σ_h w_h · out_h with learned w (init
  1/4). The scores are probabilities (PSLA trains them with BCELoss), not logits. As in PSLA, the pooling runs over
  all 33 time steps, padding included: it reproduces the published model's predictions.

Pooled embedding for SPA (1408-dim): the mean over time of the frequency-averaged feature map, i.e. the global average
pooling for which EfficientNet was designed, over the time steps that hold real audio (a step covers 32 frames; it
counts when any of them is real, so padding does not dilute the embedding of a short clip). The attention-pooled
alternative is per class (527 × 4 different weightings of time), so it offers no single clip vector, and the 527
scores themselves would squeeze the embedding through the original classes.

Checkpoints (BSD-3-Clause, YuanGongND/psla pretrained_models/README.md): `as_mdl_0_wa.pth` (weight averaging, AudioSet
eval mAP 0.444) https://www.dropbox.com/s/ieggie0ara4x26d/as_mdl_0_wa.pth?dl=1 and `as_mdl_0.pth` (single model, mAP
0.440) https://www.dropbox.com/s/d1z27wj30ew5qrs/as_mdl_0.pth?dl=1. No sha256 of them is known, so they have no short
name: download one and pass its path (`from_backbone("psla", pretrained_backbone="as_mdl_0_wa.pth")`,
`recipes/train.py --pretrained_backbone`). They are plain state dicts saved from `nn.DataParallel` (keys prefixed
`module.`), with efficientnet-pytorch names; `effnet._fc.*` (ImageNet classifier) is unused, and weight averaging
left `num_batches_tracked` as a float. `load_psla_checkpoint` renames them and reads the EfficientNet variant
(b0-b7), the number of heads and of classes from the file, so PSLA's sibling checkpoints (the ensemble members, the
FSD50K models with 200 classes) load too.

Front-end: the `psla` preset (16 kHz Kaldi fbank as AST's, 1056 frames, (x + 4.6476) / 4.5699).
PEFT LoRA: target the pointwise convolutions, `LoraConfig(target_modules=["expand_conv", "project_conv"],
modules_to_save=["classifier"])` (add "top_conv" for the 1×1 head convolution); the depthwise convolutions are
grouped and few in parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, EfficientNetConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithNoAttention, BaseModelOutputWithPooling
from transformers.models.efficientnet.modeling_efficientnet import (
    EfficientNetBlock,
    EfficientNetEmbeddings,
    EfficientNetEncoder,
    round_filters,
)

# efficientnet-pytorch's `efficientnet_params`: variant -> (width coefficient, depth coefficient, image size).
EFFICIENTNET_VARIANTS = {
    "b0": (1.0, 1.0, 224),
    "b1": (1.0, 1.1, 240),
    "b2": (1.1, 1.2, 260),
    "b3": (1.2, 1.4, 300),
    "b4": (1.4, 1.8, 380),
    "b5": (1.6, 2.2, 456),
    "b6": (1.8, 2.6, 528),
    "b7": (2.0, 3.1, 600),
}

ATTENTION_EPSILON = 1e-7  # PSLA clamps the attention weights to [eps, 1 - eps] before normalising them over time


class PSLAConfig(EfficientNetConfig):
    """Configuration of the PSLA backbone: transformers' `EfficientNetConfig` with PSLA's EfficientNet-B2 defaults.

    Args (beyond `EfficientNetConfig`'s, whose defaults here are B2 with one input channel):
        num_mel_bins: mel bins of the input features (the image height).
        max_length: frames of the input (PSLA pads and crops its fbank to 1056), or None for any length.
        attention_heads: heads of the attention pooling (PSLA's `head_num`).
        num_audioset_classes: outputs of the original head (527 AudioSet classes; 200 for PSLA's FSD50K models).
        batch_norm_momentum: in PyTorch's convention (efficientnet-pytorch: 1 - 0.99), unlike transformers' default.
    `dropout_rate` belongs to EfficientNet's ImageNet classifier and is unused; `drop_connect_rate` is the per-sample
    drop connect of the residual branches in training (scaled by block index, as in efficientnet-pytorch).
    """

    model_type = "spa_psla"

    num_channels: int = 1
    image_size: int | list[int] | tuple[int, int] = 260
    width_coefficient: float = 1.1
    depth_coefficient: float = 1.2
    dropout_rate: float | int = 0.3
    depthwise_padding: list[int] | tuple[int, ...] = (5, 8, 16)
    hidden_dim: int = 1408
    batch_norm_momentum: float = 0.01
    num_mel_bins: int = 128
    max_length: int | None = 1056
    attention_heads: int = 4
    num_audioset_classes: int = 527

    def __post_init__(self, **kwargs):
        self.depthwise_padding = list(self.depthwise_padding)
        if self.hidden_dim != round_filters(self, 1280):
            raise ValueError(
                f"hidden_dim must be the head convolution's width round_filters(1280) = {round_filters(self, 1280)} "
                f"for width_coefficient {self.width_coefficient}, got {self.hidden_dim}."
            )
        if any(kernel % 2 == 0 for kernel in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd (symmetric 'same' padding), got {list(self.kernel_sizes)}.")
        for name in ("attention_heads", "num_audioset_classes", "num_mel_bins"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        super().__post_init__(**kwargs)

    @property
    def num_blocks(self) -> int:
        return sum(math.ceil(self.depth_coefficient * repeats) for repeats in self.num_block_repeats)


# Registered so that AutoConfig resolves the sub-config of saved PSLA models. exist_ok: a checkpoint's remote-code copy
# of this file may be imported next to the installed package.
AutoConfig.register(PSLAConfig.model_type, PSLAConfig, exist_ok=True)


class PSLAEfficientNetBlock(EfficientNetBlock, GradientCheckpointingLayer):
    """transformers' MBConv block, checkpointed when gradient checkpointing is on. It adds no state: the constructor
    of `PSLAEfficientNet` gives the blocks that transformers' encoder built this class, keeping their weight names."""


class DropConnect(nn.Module):
    """efficientnet-pytorch's drop connect (stochastic depth): in training, the residual branch of each sample is
    zeroed with probability p and otherwise scaled by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return hidden
        keep = 1.0 - self.p
        mask = torch.rand(hidden.shape[0], 1, 1, 1, dtype=hidden.dtype, device=hidden.device) < keep
        return hidden * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def static_same_padding(size: int, kernel: int, stride: int) -> int:
    """Per-side padding of efficientnet-pytorch 0.7.0's static "same" padding (`Conv2dStaticSamePadding`) of an input
    `size` wide: TensorFlow's total "same" padding, with its larger half on *both* sides."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total - total // 2


class PSLAEfficientNet(nn.Module):
    """transformers' EfficientNet (embeddings and encoder, the modules and weight names of `EfficientNetModel`) that
    computes and trains as efficientnet-pytorch 0.7.0 does: its padding, BatchNorm momentum and drop connect, and
    blocks that gradient checkpointing can recompute. A plain module, not a `PreTrainedModel`: inside SPA it takes
    the SPA model's initialisation (transformers' EfficientNet draws its norm scales from N(0, 0.02)) and accepts
    any `attn_implementation`, as it has no attention."""

    def __init__(self, config: PSLAConfig):
        super().__init__()
        self.embeddings = EfficientNetEmbeddings(config)
        self.encoder = EfficientNetEncoder(config)
        self._pad_as_efficientnet_pytorch_070(config)
        self._train_as_efficientnet_pytorch_070(config)

    def _pad_as_efficientnet_pytorch_070(self, config: PSLAConfig) -> None:
        """Replace transformers' padding of the stem and of the strided depthwise convolutions by 0.7.0's.

        Stride-1 convolutions agree already (odd kernels: k // 2 on every side). 0.7.0 works its padding out once,
        for `image_size` and the sizes the strides make of it (ceil(size / 2)), whatever the size of the input.
        """
        height, width = (config.image_size,) * 2 if isinstance(config.image_size, int) else config.image_size

        def zero_pad(kernel: int) -> nn.ZeroPad2d:
            side_w, side_h = static_same_padding(width, kernel, 2), static_same_padding(height, kernel, 2)
            return nn.ZeroPad2d((side_w, side_w, side_h, side_h))

        self.embeddings.padding = zero_pad(self.embeddings.convolution.kernel_size[0])
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        for block in self.encoder.blocks:
            depthwise = block.depthwise_conv
            if depthwise.stride == 2:
                depthwise.depthwise_conv_pad = zero_pad(depthwise.depthwise_conv.kernel_size[0])
                height, width = math.ceil(height / 2), math.ceil(width / 2)

    def _train_as_efficientnet_pytorch_070(self, config: PSLAConfig) -> None:
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = config.batch_norm_momentum
        for block in self.encoder.blocks:
            block.projection.dropout = DropConnect(block.projection.dropout.p)
            block.__class__ = PSLAEfficientNetBlock

    @property
    def time_reduction(self) -> int:
        """Input columns per column of the feature map: 2 for the stem and for every strided block."""
        return 2 ** (1 + sum(block.depthwise_conv.stride == 2 for block in self.encoder.blocks))

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutputWithNoAttention:
        hidden = self.embeddings(pixel_values)
        return self.encoder(hidden, output_hidden_states=output_hidden_states, return_dict=True)


class PSLAAttentionPooling(nn.Module):
    """PSLA's multi-head attention pooling (`MHeadAttention`, weight names as in its checkpoints): (B, C, T) feature
    sequence -> (B, classes) probabilities."""

    def __init__(self, hidden_size: int, num_classes: int, num_heads: int):
        super().__init__()
        self.att = nn.ModuleList(nn.Conv2d(hidden_size, num_classes, 1) for _ in range(num_heads))
        self.cla = nn.ModuleList(nn.Conv2d(hidden_size, num_classes, 1) for _ in range(num_heads))
        self.head_weight = nn.Parameter(torch.full((num_heads,), 1.0 / num_heads))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden[..., None]  # (B, C, T, 1): the 1×1 convolutions of the checkpoint see an image
        scores = None
        for att, cla, weight in zip(self.att, self.cla, self.head_weight, strict=True):
            attention = torch.sigmoid(att(hidden)[..., 0]).clamp(ATTENTION_EPSILON, 1.0 - ATTENTION_EPSILON)
            classes = torch.sigmoid(cla(hidden)[..., 0])
            head = (attention / attention.sum(dim=-1, keepdim=True) * classes).sum(dim=-1) * weight
            scores = head if scores is None else scores + head
        return scores


class PSLABackbone(nn.Module):
    """(B, frames, mels) log-mel + frame mask -> (B, hidden_dim) pooled embedding; `audioset_scores` gives PSLA's own
    predictions.

    `last_hidden_state` is the final feature map (B, hidden_dim, mels / 32, frames / 32); `hidden_states` are the
    stem's output and each block's (B, channels, height, width), as transformers' EfficientNet returns them. No
    attention weights: `attentions` is None.
    """

    _no_split_modules = ["PSLAEfficientNetBlock"]
    audioset_head_modules = ("attention",)

    def __init__(self, config: PSLAConfig):
        super().__init__()
        self.config = config
        self.efficientnet = PSLAEfficientNet(config)
        self.attention = PSLAAttentionPooling(config.hidden_dim, config.num_audioset_classes, config.attention_heads)
        self.time_reduction = self.efficientnet.time_reduction  # frames per time step of the feature map

    def feature_map(
        self, features: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(B, frames, mels) -> the EfficientNet feature map (B, hidden_dim, mels', frames') and, if asked, the
        hidden states. PSLA feeds the fbank as an image of height mels and width frames."""
        encoded = self.efficientnet(features.transpose(1, 2).unsqueeze(1), output_hidden_states)
        return encoded.last_hidden_state, encoded.hidden_states

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        feature_map, hidden_states = self.feature_map(features, output_hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=feature_map,
            pooler_output=self._time_mean(feature_map.mean(dim=2), frame_mask),
            hidden_states=hidden_states,
        )

    def audioset_scores(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """PSLA's own (B, num_audioset_classes) probabilities. Like PSLA, it pools over every time step, padding
        included, so `frame_mask` is not used."""
        feature_map, _ = self.feature_map(features)
        return self.attention(feature_map.mean(dim=2))

    def _time_mean(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, C, steps) -> (B, C): the mean over the steps that cover at least one real frame."""
        if frame_mask is None:
            return hidden.mean(dim=2)
        steps = hidden.shape[2]
        mask = frame_mask[:, : steps * self.time_reduction].float()
        mask = nn.functional.pad(mask, (0, steps * self.time_reduction - mask.shape[1]))
        mask = mask.view(mask.shape[0], steps, self.time_reduction).amax(dim=2)[:, None].to(hidden.dtype)
        # A clip without a single real frame pools to zeros.
        return (hidden * mask).sum(dim=2) / mask.sum(dim=2).clamp_min(1)


__all__ = ["PSLAAttentionPooling", "PSLABackbone", "PSLAConfig", "PSLAEfficientNet"]
