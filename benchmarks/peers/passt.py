"""PaSST: ours (the `passt` front-end + `PaSSTBackbone`) vs hear21passt 0.0.26 (`AugmentMelSTFT` + its `PaSST`), full
size (PaSST-S: 12 x 99 patches of 10 s at 32 kHz), on the same waveforms.

Both sides compute the log-mel and run the transformer with the same random weights, and both return the AudioSet
logits and the pooled embedding. In train mode both apply PaSST's AudioSet structured patchout (40 time columns,
4 frequency rows); hear21passt's SpecAugment is off (it needs torchaudio's transforms), ours has none. hear21passt
imports timm and torchaudio: it gets stand-ins for the one timm function and torchaudio's Kaldi mel banks it uses.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from peer_utils import randomize_, torchaudio_kaldi  # noqa: E402

from modeling_spa.backbone_passt import PaSSTBackbone, PaSSTConfig  # noqa: E402
from modeling_spa.frontend import LogMelFrontend, frontend_preset  # noqa: E402

DESCRIPTION = "passt front-end + PaSSTBackbone vs hear21passt AugmentMelSTFT + PaSST, 10 s at 32 kHz (waveforms in)"
SECONDS, RATE, SEED = 10, 32000, 0


def hear21passt():
    """hear21passt's model and mel modules, imported with stand-ins for timm and torchaudio."""
    torchaudio_kaldi()
    hub = types.ModuleType("timm.models._hub")
    hub.download_cached_file = None  # only used to download release weights
    models = types.ModuleType("timm.models")
    models.__path__, models._hub = [], hub
    timm = types.ModuleType("timm")
    timm.__path__, timm.models = [], models
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models._hub": hub})
    from hear21passt.models import passt, preprocess

    passt.first_RUN = False  # its first forward prints every shape
    return passt, preprocess


class Peer(nn.Module):
    def __init__(self):
        super().__init__()
        passt, preprocess = hear21passt()
        self.mel = preprocess.AugmentMelSTFT(
            n_mels=128, sr=RATE, win_length=800, hopsize=320, n_fft=1024, freqm=0, timem=0, fmin=0.0, fmax=None,
            fmin_aug_range=10, fmax_aug_range=2000,
        )  # fmt: skip
        self.net = passt.PaSST(
            img_size=(128, 998), patch_size=16, stride=10, distilled=True, num_classes=527, s_patchout_t=40,
            s_patchout_f=4,
        )  # fmt: skip
        randomize_(self.net, seed=SEED)

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.mel(waves)[:, None])


class Ours(nn.Module):
    def __init__(self):
        super().__init__()
        self.frontend = LogMelFrontend(**frontend_preset("passt"))
        # The same random weights as the peer's: both hold the release's tensors in the same order.
        self.backbone = randomize_(PaSSTBackbone(PaSSTConfig()), seed=SEED)

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, frame_mask = self.frontend(waves)
        pooled = self.backbone(features, frame_mask).pooler_output
        return self.backbone.head(pooled), pooled


def build(impl: str, batch_size: int, device: str) -> tuple[nn.Module, tuple[torch.Tensor]]:
    if impl not in ("ours", "peer"):
        raise ValueError(f"impl must be 'ours' or 'peer', got {impl!r}")
    torch.manual_seed(SEED)
    module = Ours() if impl == "ours" else Peer()
    waves = 0.1 * torch.randn(batch_size, SECONDS * RATE, generator=torch.Generator().manual_seed(SEED))
    return module.eval().to(device), (waves.to(device),)
