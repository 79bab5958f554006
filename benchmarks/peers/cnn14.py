"""PANNs CNN14: ours (the `cnn14` front-end + `Cnn14Backbone`) vs panns_inference 0.1.1's `Cnn14` (torchlibrosa's
STFT/mel + its CNN), full size, on the same 10 s waveforms at 32 kHz.

Both return the clip-wise AudioSet probabilities and the 2048-dim embedding. The weights are random (the same on both
sides: each submodule is randomised from a seed derived from its name, so neither process holds the other model).
The peer's SpecAugment (training mode only) is replaced by an identity: it is an augmentation that ours leaves to the
training recipe, so with it the two would not do the same work.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import zlib
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from peer_utils import randomize_  # noqa: E402

from modeling_spa.backbone_cnn14 import Cnn14Backbone, Cnn14Config  # noqa: E402
from modeling_spa.frontend import LogMelFrontend, frontend_preset  # noqa: E402

DESCRIPTION = "front-end + CNN14 vs panns_inference Cnn14 (torchlibrosa STFT/mel + CNN), 10 s at 32 kHz"
SAMPLES = 320_000
PEER_FRONTEND = ("spectrogram_extractor", "logmel_extractor")


def panns_models():
    """panns_inference.models without the package's __init__, which downloads a label CSV at import."""
    if "panns_inference.models" not in sys.modules:
        root = Path(importlib.util.find_spec("panns_inference").origin).parent
        package = types.ModuleType("panns_inference")
        package.__path__ = [str(root)]
        sys.modules.setdefault("panns_inference", package)
    return importlib.import_module("panns_inference.models")


def randomize_by_name_(module: nn.Module) -> nn.Module:
    """The same random weights in ours and the peer: their submodules share names, shapes and parameter order."""
    for name, child in module.named_children():
        if name not in PEER_FRONTEND and any(True for _ in child.parameters()):
            randomize_(child, seed=zlib.crc32(name.encode()))
    return module.eval()


class Ours(nn.Module):
    """Front-end + backbone with the peer's outputs: clip-wise probabilities and the embedding."""

    def __init__(self):
        super().__init__()
        self.frontend = LogMelFrontend(**frontend_preset("cnn14"))
        self.backbone = Cnn14Backbone(Cnn14Config())

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        features, frame_mask = self.frontend(waveform)
        embedding, _, _ = self.backbone._embed(features, frame_mask, False)
        clipwise = torch.sigmoid(self.backbone.fc_audioset(embedding))
        return {"clipwise_output": clipwise, "embedding": self.backbone.embedding_dropout(embedding)}


def build(impl: str, batch_size: int, device: str) -> tuple[nn.Module, tuple[torch.Tensor]]:
    if impl == "ours":
        module = Ours()
        randomize_by_name_(module.backbone)
    elif impl == "peer":
        module = panns_models().Cnn14(32000, 1024, 320, 64, 50, 14000, 527)
        module.spec_augmenter = nn.Identity()
        randomize_by_name_(module)
    else:
        raise ValueError(f"impl must be 'ours' or 'peer', got {impl!r}")
    audio = torch.randn(batch_size, SAMPLES, generator=torch.Generator().manual_seed(0)) * 0.1
    return module.to(device), (audio.to(device),)
