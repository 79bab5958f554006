"""HTS-AT: ours (`HTSATBackbone`) vs transformers' `ClapAudioModel` + HTS-AT's token-semantic head, full size, on the
same (B, 1001, 64) log-mel features (10 s at 32 kHz; both stretch them to 1024 frames).

Ours wraps that very `ClapAudioModel`, so the ratio shows the wrapper's overhead (a shape check, the head as a method),
not a different encoder. Both return the clip-wise AudioSet probabilities and the 768-dim embedding from one encoder
pass. The weights are random and the same on both sides (each part randomised from its own seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from transformers import ClapAudioConfig, ClapAudioModel

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from peer_utils import randomize_  # noqa: E402

from modeling_spa.backbone_htsat import HTSATBackbone, HTSATConfig  # noqa: E402

DESCRIPTION = "HTSATBackbone vs ClapAudioModel + token-semantic head (tscam_conv), features of 10 s at 32 kHz"
FRAMES, MELS = 1001, 64
ENCODER_SEED, HEAD_SEED = 1, 2


class Ours(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = HTSATBackbone(HTSATConfig())
        randomize_(self.backbone.htsat, seed=ENCODER_SEED)
        randomize_(self.backbone.tscam_conv, seed=HEAD_SEED)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.backbone(features)
        return {
            "clipwise_output": self.backbone.token_semantic_scores(out.last_hidden_state),
            "embedding": out.pooler_output,
        }


class Peer(nn.Module):
    """ClapAudioModel with HTS-AT's settings (no MLP dropout, drop path 0.1) and the head as HTS-AT computes it."""

    def __init__(self):
        super().__init__()
        self.tower = randomize_(
            ClapAudioModel(ClapAudioConfig(hidden_dropout_prob=0.0, drop_path_rate=0.1)), ENCODER_SEED
        )
        self.tscam_conv = randomize_(nn.Conv2d(768, 527, kernel_size=(2, 3), padding=(0, 1)), HEAD_SEED)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.tower(input_features=features[:, None])
        clipwise = torch.sigmoid(
            nn.functional.adaptive_avg_pool1d(self.tscam_conv(out.last_hidden_state).flatten(2), 1)
        )
        return {"clipwise_output": clipwise.flatten(1), "embedding": out.pooler_output}


def build(impl: str, batch_size: int, device: str) -> tuple[nn.Module, tuple[torch.Tensor]]:
    if impl not in ("ours", "peer"):
        raise ValueError(f"impl must be 'ours' or 'peer', got {impl!r}")
    torch.manual_seed(0)
    module = Ours() if impl == "ours" else Peer()
    features = torch.randn(batch_size, FRAMES, MELS, generator=torch.Generator().manual_seed(0)) * 20 - 45
    return module.eval().to(device), (features.to(device),)
