"""PSLA's checkpoints (`as_mdl_0_wa.pth`, `as_mdl_0.pth`: EffNetAttention in efficientnet-pytorch 0.7.0's names,
maybe `module.`-prefixed) -> `PSLABackbone`, by path: the authors publish no hash, so there is no short name."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import EfficientNetConfig
from transformers.models.efficientnet.modeling_efficientnet import round_filters

from ..backbone_psla import EFFICIENTNET_VARIANTS, PSLABackbone, PSLAConfig
from .checkpoints import (
    CheckpointError,
    load_matching,
    load_torch_checkpoint,
    reading_checkpoint,
    resolve_checkpoint,
    tensors_of,
)
from .releases import releases_of

PSLA_CHECKPOINT_URLS = {
    "as_mdl_0_wa.pth": "https://www.dropbox.com/s/ieggie0ara4x26d/as_mdl_0_wa.pth?dl=1",
    "as_mdl_0.pth": "https://www.dropbox.com/s/d1z27wj30ew5qrs/as_mdl_0.pth?dl=1",
}


_BLOCK_RENAMES = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_se_reduce": "squeeze_excite.reduce",
    "_se_expand": "squeeze_excite.expand",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}
_TOP_RENAMES = {
    "_conv_stem": "embeddings.convolution",
    "_bn0": "embeddings.batchnorm",
    "_conv_head": "encoder.top_conv",
    "_bn1": "encoder.top_bn",
}


def _efficientnet_name(name: str) -> str:
    """An efficientnet-pytorch weight name in transformers' names; unknown names stay as they are (and are then
    reported as unexpected)."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", name)
    if block and block[2] in _BLOCK_RENAMES:
        return f"encoder.blocks.{block[1]}.{_BLOCK_RENAMES[block[2]]}.{block[3]}"
    layer, _, rest = name.partition(".")
    return f"{_TOP_RENAMES[layer]}.{rest}" if layer in _TOP_RENAMES else name


def convert_psla_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PSLA's `EffNetAttention` state dict (efficientnet-pytorch names, maybe `module.`-prefixed) in our names."""
    converted = {}
    for key, tensor in state.items():
        key = key.removeprefix("module.")
        if key.startswith("effnet._fc."):  # EfficientNet's ImageNet classifier, replaced by the attention pooling
            continue
        if key.startswith("effnet."):
            key = "efficientnet." + _efficientnet_name(key.removeprefix("effnet."))
        if key.endswith("num_batches_tracked"):
            tensor = tensor.round().long()  # weight averaging divided the counters too, leaving floats
        converted[key] = tensor
    return converted


def psla_config_from_state_dict(state: Mapping[str, torch.Tensor], source: str) -> PSLAConfig:
    """The config of a converted PSLA state dict: EfficientNet variant, heads and classes, read from the file.

    A file without PSLA's head convolution or attention weights gets the defaults, and `load_matching` then names it
    as another family's checkpoint.
    """
    head_conv = state.get("efficientnet.encoder.top_conv.weight")
    heads = sorted(int(m[1]) for key in state if (m := re.fullmatch(r"attention\.att\.(\d+)\.weight", key)))
    if head_conv is None or not heads:
        return PSLAConfig()
    blocks = {int(key.split(".")[3]) for key in state if key.startswith("efficientnet.encoder.blocks.")}
    heads_and_classes = dict(
        attention_heads=len(heads), num_audioset_classes=state[f"attention.att.{heads[0]}.weight"].shape[0]
    )
    for width, depth, size in EFFICIENTNET_VARIANTS.values():
        if round_filters(EfficientNetConfig(width_coefficient=width), 1280) != head_conv.shape[0]:
            continue
        config = PSLAConfig(
            width_coefficient=width,
            depth_coefficient=depth,
            image_size=size,
            hidden_dim=head_conv.shape[0],
            **heads_and_classes,
        )
        if config.num_blocks == len(blocks):
            return config
    raise CheckpointError(
        f"{source}: an EfficientNet with a {head_conv.shape[0]}-channel head convolution and {len(blocks)} blocks is "
        f"none of the variants b0-b7 that PSLA builds."
    )


def _psla_file(source: str | os.PathLike) -> Path:
    """The local PSLA checkpoint file; a release's short name only if a PSLA release with a pinned hash exists."""
    try:
        return resolve_checkpoint(source, releases_of("psla"))
    except FileNotFoundError as err:
        urls = "; ".join(f"{name}: {url}" for name, url in PSLA_CHECKPOINT_URLS.items())
        raise FileNotFoundError(
            f"{source!r} is not a file. The PSLA checkpoints have no pinned sha256 and so no short name: download one "
            f"({urls}) and pass the file's path."
        ) from err


def load(source: str | os.PathLike) -> PSLABackbone:
    """A PSLA backbone with the weights of a PSLA checkpoint file (e.g. `as_mdl_0_wa.pth`), in eval mode."""
    path = _psla_file(source)
    with reading_checkpoint(path, "PSLA"):
        state = convert_psla_state_dict(tensors_of(load_torch_checkpoint(path), path, keys=("state_dict", "model")))
        backbone = PSLABackbone(psla_config_from_state_dict(state, str(path)))
        load_matching(backbone, state, "PSLA", str(path))
    return backbone.eval()
