"""PANNs' CNN14 checkpoints (`Cnn14_mAP=0.431.pth`, a dict {iteration, model, sampler}) -> `Cnn14Backbone`: the
checkpoint's own names minus its in-model STFT and mel; the `sampler` entry's NumPy arrays are read through an
allow-list of plain-array globals, never unpickled freely."""

from __future__ import annotations

import os

import torch

from ..backbone_cnn14 import Cnn14Backbone, Cnn14Config
from .checkpoints import load_matching, load_torch_checkpoint, reading_checkpoint, resolve_checkpoint, tensors_of
from .releases import releases_of

FAMILY = "cnn14"
# The in-model STFT (conv weights) and mel filterbank of PANNs' checkpoints: the front-end preset replaces them.
FRONTEND_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")


def load(source: str | os.PathLike) -> Cnn14Backbone:
    """A CNN14 with the weights of a PANNs checkpoint: a file, or the short name of a release (`cnn14-ap431`)."""
    path = resolve_checkpoint(source, releases_of(FAMILY))
    with reading_checkpoint(path, FAMILY):
        # The `sampler` entry holds NumPy arrays: allow-listed plain arrays, never code.
        checkpoint = load_torch_checkpoint(path, allow_numpy=True)
        state = convert_panns_state_dict(tensors_of(checkpoint, path, ("model",)))
        backbone = Cnn14Backbone(config_from_state_dict(state))
        load_matching(backbone, state, FAMILY, str(path))
    return backbone.eval()


def convert_panns_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A PANNs CNN14 state dict in this module's names: the in-model STFT/mel dropped, a DataParallel `module.`
    prefix (fine-tuned copies saved without `.module`) removed."""
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if not key.startswith(FRONTEND_PREFIXES)}


def config_from_state_dict(state: dict[str, torch.Tensor]) -> Cnn14Config:
    """The config whose shapes the file has; the default config where the file is no CNN14 (the key check then
    names it as another family's file)."""
    hidden_sizes = []
    while f"conv_block{len(hidden_sizes) + 1}.conv1.weight" in state:
        hidden_sizes.append(state[f"conv_block{len(hidden_sizes) + 1}.conv1.weight"].shape[0])
    if not hidden_sizes or "bn0.weight" not in state or "fc1.weight" not in state:
        return Cnn14Config()
    head = state.get("fc_audioset.weight")
    return Cnn14Config(
        num_mel_bins=state["bn0.weight"].shape[0],
        hidden_sizes=hidden_sizes,
        embedding_size=state["fc1.weight"].shape[0],
        num_audioset_classes=0 if head is None else head.shape[0],
    )
