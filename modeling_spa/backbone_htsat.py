"""HTS-AT (Chen et al., ICASSP 2022) as an SPA backbone, through transformers' `ClapAudioModel` (its Swin encoder).

Two sources of weights (`HTSATBackbone.from_pretrained_htsat`):

- HTS-AT's own AudioSet checkpoints (RetroCirce/HTS-Audio-Transformer, MIT): Lightning `.ckpt` files whose
  `state_dict` keys all start with `sed_model.`, e.g. `HTSAT_AudioSet_Saved_1.ckpt` (short name `htsat-audioset-1`;
  the ensemble's `_2` .. `_6` by path). A 32 kHz model on CNN14's front-end (the `cnn14` preset: 64 mel, hop 320);
  its token-semantic head (`tscam_conv`) gives the published AudioSet predictions (`audioset_scores`).
- CLAP's audio tower, e.g. `laion/clap-htsat-unfused` (Apache-2.0; pinned revision) from the Hub or a local folder:
  48 kHz (the `htsat` preset, hop 480), no AudioSet head. CLAP's own extractor repeats clips shorter than 10 s
  (`repeatpad`); SPA pads them with silence, as for HTS-AT.

Frames: the encoder takes a `spec_size` x `spec_size` image made of `freq_ratio = spec_size // num_mel_bins` (4)
consecutive chunks of time stacked along frequency, so at most `spec_size * freq_ratio` = 1024 frames; fewer are
stretched to 1024 by bicubic interpolation, exactly as HTS-AT's `reshape_wav2img` (and CLAP) does. HTS-AT trained and
evaluated on 10 s clips zero-padded to 10 s: 1001 frames at 32 kHz / hop 320 (and at 48 kHz / hop 480), stretched to
1024. So the front-end always delivers `max_frames` = 1001 frames (default; at most 1024), real audio first, then
frames of silence at the front-end's -100 dB floor, which is what a zero-padded clip gives: the same input the
published model saw, for clips of every length up to 10 s. Longer clips are scored in windows (`SPAConfig`).

Pooled embedding: HTS-AT's `latent_output` (= `ClapAudioModel.pooler_output`), the mean of the final 768-dim tokens.
Original AudioSet head: `tscam_conv` (768 -> 527, kernel (2, 3)) over the final (B, 768, 2, 32) token map, mean over
time, sigmoid. HTS-AT's `head` Linear(527, 527) is stored in its checkpoints but never used: it is dropped.

PEFT LoRA: `target_modules=["query", "value"]` (the window attention's `attention.self.query` / `.value` Linear
layers; `key`, `attention.output.dense`, `intermediate.dense`, `output.dense` are the other Linear layers).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, ClapAudioConfig, ClapAudioModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .frontend import FRONTEND_PRESETS


class HTSATConfig(ClapAudioConfig):
    """Configuration of the HTS-AT backbone: a `ClapAudioConfig` (the Swin encoder's settings) plus SPA's own.

    The defaults are HTS-AT's AudioSet model (its `config.py`: spec_size 256, patch 4, window 8, dim 96, depths
    2-2-6-2, heads 4-8-16-32, drop path 0.1, no MLP dropout).

    Args:
        frontend_preset: the log-mel preset its weights were trained on: `cnn14` (HTS-AT's AudioSet checkpoints,
            32 kHz) or `htsat` (CLAP's audio tower, 48 kHz).
        max_frames: frames the front-end delivers (padded with silence); the encoder stretches them to
            `spec_size * spec_size // num_mel_bins` (1024). 1001 is a 10 s clip, as HTS-AT was trained.
        audioset_head: whether the model keeps HTS-AT's token-semantic AudioSet head (`tscam_conv`, `num_classes`
            outputs); CLAP's audio tower has none.
    """

    model_type = "spa_htsat"

    frontend_preset: str = "cnn14"
    max_frames: int = 1001
    audioset_head: bool = True
    hidden_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.frontend_preset not in FRONTEND_PRESETS:
            raise ValueError(f"Unknown frontend_preset {self.frontend_preset!r}; known: {sorted(FRONTEND_PRESETS)}.")
        if self.enable_fusion:
            raise ValueError("enable_fusion needs CLAP's 4-channel fused input and is_longer flags; SPA feeds one.")
        if not 0 < self.max_frames <= self.encoder_frames:
            raise ValueError(
                f"max_frames must be in 1..{self.encoder_frames} (spec_size * spec_size // num_mel_bins), "
                f"got {self.max_frames}."
            )

    @property
    def encoder_frames(self) -> int:
        """The frames of the encoder's input image, to which shorter inputs are stretched (1024)."""
        return self.spec_size * (self.spec_size // self.num_mel_bins)

    @property
    def pooled_size(self) -> int:
        return self.patch_embeds_hidden_size * 2 ** (len(self.depths) - 1)


# Registered so that AutoConfig resolves the sub-config of saved models. exist_ok: a checkpoint's remote-code copy of
# this file may be imported next to the installed package.
AutoConfig.register(HTSATConfig.model_type, HTSATConfig, exist_ok=True)


class HTSATBackbone(nn.Module):
    """(B, frames, 64) log-mel -> (B, 768) pooled HTS-AT embedding; frames <= `config.encoder_frames` (1024).

    `hidden_states` are `ClapAudioModel`'s token maps (B, channels, height, width) after the patch embedding and
    each stage, `attentions` each stage's last window-attention weights.
    """

    # Read by the SPA model's post_init: a device map keeps each Swin stage (blocks + patch merging) on one device.
    _no_split_modules = ["ClapAudioStage"]

    def __init__(self, config: HTSATConfig):
        super().__init__()
        self.htsat = ClapAudioModel(config)
        self.tscam_conv = self._token_semantic_conv(config) if config.audioset_head else None

    @staticmethod
    def _token_semantic_conv(config: HTSATConfig) -> nn.Conv2d:
        # The final token map has (spec_size / patch_stride / 2^(stages-1)) / freq_ratio frequency rows (2): the
        # kernel spans all of them and 3 time steps.
        stride = config.patch_stride if isinstance(config.patch_stride, int) else config.patch_stride[0]
        rows = config.spec_size // 2 ** (len(config.depths) - 1) // stride // (config.spec_size // config.num_mel_bins)
        return nn.Conv2d(config.pooled_size, config.num_classes, kernel_size=(rows, 3), padding=(0, 1))

    @property
    def config(self) -> HTSATConfig:
        return self.htsat.config

    @property
    def audioset_head_modules(self) -> tuple[str, ...]:
        return ("tscam_conv",) if self.tscam_conv is not None else ()

    def _encode(self, features: torch.Tensor, **flags) -> BaseModelOutputWithPooling:
        if features.shape[1] > self.config.encoder_frames:
            raise ValueError(
                f"HTS-AT takes at most {self.config.encoder_frames} frames, got {features.shape[1]}: set the "
                f"front-end's max_frames to {self.config.max_frames} (longer clips are scored in windows)."
            )
        return self.htsat(input_features=features[:, None], **flags)

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        # No mask: frames past a clip's end hold the front-end's silence floor, as the zero-padded clips HTS-AT was
        # trained on; its Swin windows have no padding mask either.
        return self._encode(features, output_hidden_states=output_hidden_states, output_attentions=output_attentions)

    def audioset_scores(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """HTS-AT's `clipwise_output`: (B, 527) sigmoid scores of its token-semantic head."""
        if self.tscam_conv is None:
            raise ValueError(
                "This HTS-AT model has no AudioSet head: CLAP's audio tower (e.g. laion/clap-htsat-unfused) was never "
                "trained on AudioSet labels. Load HTS-AT's own AudioSet checkpoint (htsat-audioset-1) for them."
            )
        return self.token_semantic_scores(self._encode(features).last_hidden_state)

    def token_semantic_scores(self, token_map: torch.Tensor) -> torch.Tensor:
        """(B, 768, 2, 32) final token map (`last_hidden_state`) -> (B, 527): class maps over time, averaged."""
        return torch.sigmoid(self.tscam_conv(token_map).flatten(2).mean(dim=2))


__all__ = ["HTSATBackbone", "HTSATConfig"]
