"""PANNs CNN14 (Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern Recognition",
2020) as an SPA backbone, a native port of `Cnn14` in qiuqiangkong/audioset_tagging_cnn (and panns_inference).

The module has the checkpoint's own parameter names, so the public `Cnn14_mAP=0.431.pth` loads as is once its in-model
STFT and mel filterbank (`spectrogram_extractor.*`, `logmel_extractor.*`) are dropped: the library's `cnn14`
front-end preset computes the same log-mel (torchlibrosa's, in dB). Architecture: `bn0`, a BatchNorm over the 64 mel
bins; `conv_block1..6` (64 .. 2048 channels, two 3x3 convolutions without bias, each followed by BatchNorm and ReLU),
2x2 average pooling after blocks 1-5 and dropout 0.2 after every block; mean over frequency, then max + mean over time;
dropout 0.5; `fc1` + ReLU gives the 2048-dim embedding, which is the pooled output (with dropout 0.5 in training, as
PANNs' `embedding`); `fc_audioset` + sigmoid on the embedding before that dropout is the original AudioSet head
(`audioset_scores`, PANNs' `clipwise_output`).

Length: the five 2x2 poolings need at least 32 frames, 9,920 samples at 32 kHz with the `cnn14` front-end; a shorter
input is refused with a ValueError (pad it with zeros). Padded batches: PANNs pools over every frame, so the padding of
a batch would change a clip's result (the padding's -100 dB frames reach ~1.3 s into the clip through the convolutions,
and enter the time mean and max). Here, given the front-end's frame mask, the feature maps are zeroed beyond each clip's
frames before every convolution (exactly what the convolutions' own zero padding does at the end of an unpadded input)
and the time pooling covers the clip's frames only; the front-end continues each padded clip past its end as the STFT of
the clip alone reflects it (`frontend.reflect_tails`). So a clip's result does not depend on the padding around it:
equal to its unpadded result in float64 (to 1e-15), to float32 rounding otherwise (2.4e-7 for a 4 s clip padded to 10
s). Without padding the mask changes nothing and the output is the peer's. A clip with fewer than 32 real frames in a
padded batch is scored over its first 32 frames, the front-end's silence frames (-100 dB) after its audio included,
rather than refused mid-training.

Not ported: SpecAugment and mixup, which PANNs' `Cnn14.forward` applies in training; they are augmentations of the
training recipe, not part of the network, and are left to it.

Checkpoints: `Cnn14_mAP=0.431.pth` (Zenodo record 3987831; short name `cnn14-ap431`, weights CC BY 4.0, code MIT) is
a dict `{iteration, model, sampler}` whose `sampler` holds NumPy arrays; it is read with `weights_only` loading and
a NumPy allow-list, never by unpickling code. Sizes (channels, mel bins, embedding, classes) are read from the file,
so PANNs' other CNN14 files load by path; the 16 kHz one (`Cnn14_16k_mAP=0.438.pth`) also needs its own front-end,
which the file does not record (`frontend={**frontend_preset("cnn14"), "sampling_rate": 16000, "win_length": 512,
"n_fft": 512, "hop_length": 160, "f_max": 8000.0}`), and the `Cnn14_DecisionLevel*` files, whose keys are the same,
pool frame-wise outputs in their head: their `audioset_scores` here are not theirs.

PEFT LoRA targets: the convolutions `conv1`, `conv2` (of the `conv_block*` modules) and the Linear `fc1`, e.g.
`LoraConfig(target_modules=r".*conv_block\\d\\.conv[12]|.*backbone\\.fc1")`; `fc_audioset` is the frozen original head.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling


class Cnn14Config(PreTrainedConfig):
    """Configuration of CNN14. The defaults are PANNs' `Cnn14` (32 kHz, 64 mel bins, 80.8M parameters).

    Args:
        num_mel_bins: mel bins of the input features (the `bn0` BatchNorm has one channel per bin).
        hidden_sizes: channels of each convolution block; every block but the last halves time and frequency.
        embedding_size: size of `fc1`, the pooled embedding.
        block_dropout: dropout after each convolution block (training).
        embedding_dropout: dropout before `fc1` and on the pooled embedding (training).
        num_audioset_classes: outputs of the original AudioSet head `fc_audioset`; 0 builds no such head.
    """

    model_type = "spa_cnn14"

    num_mel_bins: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embedding_size: int = 2048
    block_dropout: float = 0.2
    embedding_dropout: float = 0.5
    num_audioset_classes: int = 527

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive channel counts, got {self.hidden_sizes}.")
        if self.num_mel_bins < 2 ** (len(self.hidden_sizes) - 1):
            raise ValueError(
                f"{len(self.hidden_sizes) - 1} poolings halve {self.num_mel_bins} mel bins to nothing: use more bins "
                "or fewer blocks."
            )
        super().__post_init__(**kwargs)

    @property
    def min_frames(self) -> int:
        """The fewest frames the poolings leave one frame of (32 for CNN14: 9,920 samples at 32 kHz, hop 320)."""
        return 2 ** (len(self.hidden_sizes) - 1)


# Registered so that AutoConfig resolves the sub-config of saved models; exist_ok for remote-code copies of this file.
AutoConfig.register(Cnn14Config.model_type, Cnn14Config, exist_ok=True)


class Cnn14ConvBlock(GradientCheckpointingLayer):  # checkpointed when gradient checkpointing is on
    """Two 3x3 convolutions with BatchNorm and ReLU, then 2x2 average pooling (floor, as PANNs) if `pool`."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, hidden: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """`padding` (B, 1, frames, 1), True beyond a clip's frames: zeroed before each convolution, as the
        convolution's own zero padding does at the end of an unpadded clip."""
        if padding is not None:
            hidden = hidden.masked_fill(padding, 0.0)
        hidden = nn.functional.relu(self.bn1(self.conv1(hidden)), inplace=True)
        if padding is not None:
            hidden = hidden.masked_fill(padding, 0.0)
        hidden = nn.functional.relu(self.bn2(self.conv2(hidden)), inplace=True)
        return nn.functional.avg_pool2d(hidden, 2) if self.pool else hidden


class Cnn14Backbone(nn.Module):
    """(B, frames, mels) log-mel in dB + frame mask -> (B, embedding_size) pooled CNN14 embedding.

    `hidden_states` are the feature maps (B, channels, frames, mels): the log-mel after `bn0` (one channel), then
    each block's output. No attention: `attentions` is None. `last_hidden_state` is the last block's feature map.
    """

    _no_split_modules = ["Cnn14ConvBlock"]

    def __init__(self, config: Cnn14Config):
        super().__init__()
        self.config = config
        self.bn0 = nn.BatchNorm2d(config.num_mel_bins)
        channels = [1, *config.hidden_sizes]
        self.block_names = [f"conv_block{index}" for index in range(1, len(config.hidden_sizes) + 1)]
        for index, name in enumerate(self.block_names):
            pool = index < len(self.block_names) - 1  # the last block pools 1x1: not at all
            self.add_module(name, Cnn14ConvBlock(channels[index], channels[index + 1], pool))
        self.block_dropout = nn.Dropout(config.block_dropout)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.fc1 = nn.Linear(config.hidden_sizes[-1], config.embedding_size)
        if config.num_audioset_classes:
            self.fc_audioset = nn.Linear(config.embedding_size, config.num_audioset_classes)

    @property
    def audioset_head_modules(self) -> tuple[str, ...]:
        return ("fc_audioset",) if self.config.num_audioset_classes else ()

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        embedding, last, hidden_states = self._embed(features, frame_mask, output_hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=last,
            pooler_output=self.embedding_dropout(embedding),
            hidden_states=hidden_states,
        )

    def audioset_scores(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """PANNs' `clipwise_output`: (B, num_audioset_classes) probabilities of the original head."""
        if not self.config.num_audioset_classes:
            raise ValueError("This CNN14 has no original AudioSet head (num_audioset_classes=0).")
        embedding, _, _ = self._embed(features, frame_mask, False)
        return torch.sigmoid(self.fc_audioset(embedding))

    def _embed(
        self, features: torch.Tensor, frame_mask: torch.Tensor | None, output_hidden_states: bool
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """fc1's embedding before its dropout, the last feature map, and the hidden states if asked for."""
        self._check_length(features.shape[1])
        # bn0 normalises each mel bin: mel bins as BatchNorm channels.
        hidden = self.bn0(features.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2).unsqueeze(1)
        hidden_states = [hidden]
        paddings = self._paddings(frame_mask, features.shape[1])
        for name, padding in zip(self.block_names, paddings[:-1], strict=True):
            hidden = self.block_dropout(self.get_submodule(name)(hidden, padding))
            hidden_states.append(hidden)
        pooled = self._pool(hidden.mean(dim=3), paddings[-1])
        embedding = nn.functional.relu(self.fc1(self.embedding_dropout(pooled)))
        return embedding, hidden, tuple(hidden_states) if output_hidden_states else None

    def _check_length(self, frames: int) -> None:
        if frames < self.config.min_frames:
            raise ValueError(
                f"CNN14 needs at least {self.config.min_frames} frames, got {frames}: its poolings leave nothing of a "
                f"shorter input. With the cnn14 front-end (32 kHz, hop 320) that is "
                f"{(self.config.min_frames - 1) * 320:,} samples; pad shorter clips with zeros."
            )

    def _paddings(self, frame_mask: torch.Tensor | None, frames: int) -> list[torch.Tensor | None]:
        """Per block, then for the time pooling: (B, 1, frames, 1) True beyond each clip's frames (None: no mask).

        A clip's frames count from the start (padding is on the right); each pooling keeps floor(frames / 2), as the
        floor-mode pooling does to an unpadded clip. Fewer than `min_frames` count as `min_frames`, silence included.
        """
        if frame_mask is None or (_may_branch_on_data() and bool(frame_mask.all())):
            # Nothing to mask: skip the masking passes (some 5-8% of a CPU forward) for one host sync on a GPU.
            return [None] * (len(self.block_names) + 1)
        lengths = frame_mask.sum(dim=1).clamp_min(self.config.min_frames)
        paddings = []
        for name in self.block_names:
            paddings.append((torch.arange(frames, device=lengths.device) >= lengths[:, None])[:, None, :, None])
            if self.get_submodule(name).pool:
                frames, lengths = frames // 2, lengths // 2
        paddings.append(paddings[-1][:, :, :, 0])  # the last block does not pool: (B, 1, frames)
        return paddings

    @staticmethod
    def _pool(hidden: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """(B, C, frames) -> (B, C): max + mean over the clip's frames (PANNs' clip-level pooling)."""
        if padding is None:
            return hidden.amax(dim=2) + hidden.mean(dim=2)
        peak = hidden.masked_fill(padding, float("-inf")).amax(dim=2)
        mean = hidden.masked_fill(padding, 0.0).sum(dim=2) / (~padding).sum(dim=2)
        return peak + mean


def _may_branch_on_data() -> bool:
    """False while compiling, exporting or tracing: there the graph must mask whatever the mask holds."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


__all__ = ["Cnn14Backbone", "Cnn14Config", "Cnn14ConvBlock"]
