"""PaSST's release files (kkoutini/PaSST) -> `PaSSTBackbone`: a plain state dict in the module's own names, loaded
strictly; the architecture (sizes, depth, strides, time table, STFT hop) is read from the file and its name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..backbone_passt import PaSSTBackbone, PaSSTConfig
from .checkpoints import (
    CheckpointError,
    load_matching,
    load_torch_checkpoint,
    reading_checkpoint,
    resolve_checkpoint,
    tensors_of,
)
from .releases import releases_of

# PaSST's released strides; a 128-bin frequency table of F' rows tells which one (see `config_from_state_dict`).
RELEASED_STRIDES = (10, 12, 14, 16)
VIT_HEAD_SIZE = 64  # DeiT/ViT: 768 = 12 heads x 64; the file holds no head count
FRAMES_ROUNDING = 100  # max_length is read as whole hundreds of frames (1000 = 10 s at hop 320)
# The tensors config_from_state_dict reads: a file without them is no PaSST release.
_TABLE_KEYS = {"cls_token", "freq_new_pos_embed", "time_new_pos_embed", "patch_embed.proj.weight", "head.1.weight"}


def load(source: str | os.PathLike) -> PaSSTBackbone:
    """A PaSST release file (a path, or a registered short name such as `passt-s-swa-ap476`), loaded safely.

    The architecture is read from the file (`config_from_state_dict`); the weights load strictly, and any
    missing, unexpected or mis-shaped key is an error that names it.
    """
    path = resolve_checkpoint(source, releases_of("passt"))
    with reading_checkpoint(path, "PaSST"):
        state = tensors_of(load_torch_checkpoint(path), path, keys=("model", "state_dict"))
        if not _TABLE_KEYS <= set(state):
            # Not a PaSST file (or a damaged one): load_matching names what is missing, against a weightless model.
            with torch.device("meta"):
                load_matching(PaSSTBackbone(PaSSTConfig()), state, "PaSST", str(path))
            raise CheckpointError(f"{path}: lacks {sorted(_TABLE_KEYS - set(state))}")  # not reached
        backbone = PaSSTBackbone(config_from_state_dict(state, str(path)))
        load_matching(backbone, state, "PaSST", str(path))
    return backbone


def config_from_state_dict(state: dict[str, torch.Tensor], filename: str = "") -> PaSSTConfig:
    """The `PaSSTConfig` of a release's state dict.

    - sizes: hidden size, depth (block count), MLP size, classes and both position tables from the tensors' shapes;
      heads = hidden size / 64 (every release: 768 / 12).
    - strides: the file cannot state them, but the frequency table can: on 128 mel bins with 16-bin patches, the
      released strides 10, 12, 14, 16 give 12, 10, 9, 8 rows. The time stride is the same (all releases are square).
    - frames: `max_length` is the most frames the time table covers, in whole hundreds: 1000 for the 99 positions of
      the 10 s releases (stride 16: 62), 2000 / 3000 for the 20 s / 30 s ones (200 / 300 positions; trained on 10 s
      crops, they take 20 s / 30 s windows as hear21passt's base20sec / base30sec do).
    - front-end: the "stfthop160" / "stfthop100" releases were trained with STFT hop 160 / 100, which the file does
      not say either: it is read from the file name in `filename` (keep their published names), and gives 2000 / 3200
      frames for 10 s. Any other name means hop 320.
    """
    patch = state["patch_embed.proj.weight"].shape[-1]
    rows = state["freq_new_pos_embed"].shape[2]
    mel_bins = 128
    strides = [s for s in RELEASED_STRIDES if (mel_bins - patch) // s + 1 == rows]
    if not strides:
        raise CheckpointError(
            f"{filename}: a frequency table of {rows} rows matches none of PaSST's released strides "
            f"{RELEASED_STRIDES} on {mel_bins} mel bins with {patch}-bin patches."
        )
    stride = strides[0]
    positions = state["time_new_pos_embed"].shape[-1]
    covered = (positions - 1) * stride + patch + stride - 1  # PaSSTConfig.max_frames_covered
    depth = len({key.split(".")[1] for key in state if re.fullmatch(r"blocks\.\d+\.norm1\.weight", key)})
    hidden = state["cls_token"].shape[-1]
    hop = re.search(r"stfthop(\d+)", Path(filename).name)
    return PaSSTConfig(
        num_mel_bins=mel_bins,
        max_length=covered // FRAMES_ROUNDING * FRAMES_ROUNDING or covered,
        patch_size=patch,
        frequency_stride=stride,
        time_stride=stride,
        time_positions=positions,
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=max(hidden // VIT_HEAD_SIZE, 1),
        intermediate_size=next((v.shape[0] for k, v in state.items() if k.endswith("mlp.fc1.weight")), 4 * hidden),
        audioset_classes=state["head.1.weight"].shape[0],
        frontend_hop_length=int(hop.group(1)) if hop else 320,
    )
