"""PSLA: our `PSLABackbone.audioset_scores` against PSLA's own model, efficientnet-pytorch 0.7.0 EfficientNet-B2
(`extract_features`) plus its 4-head attention pooling (`EffNetAttention.forward` of YuanGongND/psla), both from
the same (B, 1056, 128) `psla` fbank features of the same random 10 s clips, with the same random weights."""

from __future__ import annotations

import torch
from efficientnet_pytorch import EfficientNet
from torch import nn

from modeling_spa.backbone_psla import PSLABackbone, PSLAConfig
from modeling_spa.conversion.psla import convert_psla_state_dict
from modeling_spa.frontend import LogMelFrontend, frontend_preset

DESCRIPTION = "EfficientNet-B2 + 4-head attention pooling, (B, 1056, 128) fbank -> 527 scores (no front-end)"


class PSLAPeer(nn.Module):
    """PSLA's EffNetAttention(b=2, head_num=4): the fbank as a (B, 1, mels, frames) image, EfficientNet features
    averaged over frequency, then the attention heads of its MHeadAttention."""

    def __init__(self, heads: int = 4, classes: int = 527):
        super().__init__()
        self.effnet = EfficientNet.from_name("efficientnet-b2", in_channels=1)
        self.effnet._fc = nn.Identity()
        channels = self.effnet._conv_head.out_channels
        self.att = nn.ModuleList(nn.Conv2d(channels, classes, 1) for _ in range(heads))
        self.cla = nn.ModuleList(nn.Conv2d(channels, classes, 1) for _ in range(heads))
        self.head_weight = nn.Parameter(torch.full((heads,), 1.0 / heads))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.effnet.extract_features(features.unsqueeze(1).transpose(2, 3))
        x = nn.functional.avg_pool2d(x, (4, 1)).transpose(2, 3)
        out = []
        for att, cla, weight in zip(self.att, self.cla, self.head_weight, strict=True):
            attention = torch.clamp(torch.sigmoid(att(x))[:, :, :, 0], 1e-7, 1.0 - 1e-7)
            classes = torch.sigmoid(cla(x))[:, :, :, 0]
            out.append(torch.sum(attention / torch.sum(attention, dim=2)[:, :, None] * classes, dim=2) * weight)
        return torch.stack(out, dim=0).sum(dim=0)


class OursScores(nn.Module):
    def __init__(self, backbone: PSLABackbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.audioset_scores(features)


def build(impl: str, batch_size: int, device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    peer = PSLAPeer()
    waves = 0.1 * torch.randn(batch_size, 10 * 16000, generator=torch.Generator().manual_seed(1))
    features, _ = LogMelFrontend(**frontend_preset("psla"))(waves)
    if impl == "peer":
        return peer.to(device), (features.to(device),)
    # The peer's weights in PSLA's checkpoint layout, through our converter.
    state = {f"module.effnet.{k}": v for k, v in peer.effnet.state_dict().items()}
    state |= {f"module.attention.{k}": v for k, v in peer.state_dict().items() if not k.startswith("effnet.")}
    ours = PSLABackbone(PSLAConfig())
    ours.load_state_dict(convert_psla_state_dict(state))
    return OursScores(ours).to(device), (features.to(device),)
