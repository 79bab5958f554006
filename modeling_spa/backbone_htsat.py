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

import re
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, ClapAudioConfig, ClapAudioModel, PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .checkpoints import (
    CheckpointError,
    Release,
    load_matching,
    load_torch_checkpoint,
    reading_checkpoint,
    register_release,
    resolve_checkpoint,
    tensors_of,
)
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

    @classmethod
    def from_pretrained_htsat(cls, source: str | Path) -> HTSATBackbone:
        """HTS-AT's weights from an original `.ckpt` file, a release's short name, or a CLAP model (Hub id/folder)."""
        source = str(source)
        if Path(source).is_file() or source in HTSAT_RELEASES:
            return from_original_checkpoint(resolve_checkpoint(source))
        return from_clap_audio_tower(source)


# -- HTS-AT's own checkpoints --------------------------------------------------------------------------------------


# HTS-AT's own checkpoints: published in a Google Drive folder, without a direct link to each file, so never
# downloaded automatically (the error says where to put them).
HTSAT_RELEASES = {
    "htsat-audioset-1": Release(
        name="htsat-audioset-1",
        backbone="htsat",
        url="https://drive.google.com/drive/folders/1f5VYMk0uos_YnuBshgmaTVioXbs7Kmz6",
        sha256="49804bf7767809be5d5bfe9dc25f401442e0d24f242dded6b6dabea56bb645b0",
        licence="mit",
        description=(
            "HTS-AT's AudioSet checkpoint HTSAT_AudioSet_Saved_1.ckpt, one of the six models of its ensemble (the "
            "paper: mAP 0.471 single, 0.487 ensemble), from the authors' Google Drive folder. Its sha256 comes from "
            "a single third-party source, not from the authors."
        ),
        file_name="HTSAT_AudioSet_Saved_1.ckpt",
        direct_download=False,
    ),
}
# CLAP's audio tower, loaded by transformers from the Hub at this revision; registered for its provenance (licence,
# pinned file and hash) in model cards.
CLAP_UNFUSED, CLAP_UNFUSED_REVISION = "laion/clap-htsat-unfused", "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a"
CLAP_RELEASES = {
    CLAP_UNFUSED: Release(
        name=CLAP_UNFUSED,
        backbone="htsat",
        url=f"https://huggingface.co/{CLAP_UNFUSED}/resolve/{CLAP_UNFUSED_REVISION}/pytorch_model.bin",
        sha256="1cd3c601bc4afe0fa87be3de4c13dd2cfadd249fac1e29acf74a9b296c3219bb",
        licence="apache-2.0",
        description="CLAP's HTS-AT audio tower (LAION, unfused; 48 kHz; no AudioSet head), from the Hugging Face Hub.",
        file_name="clap-htsat-unfused-pytorch_model.bin",
    ),
}
for _release in (*HTSAT_RELEASES.values(), *CLAP_RELEASES.values()):
    register_release(_release)


# The original names -> ClapAudioModel's (inside `audio_encoder.`), after HTS-AT's `sed_model.` prefix is removed.
_RENAMES = (
    (re.compile(r"^bn0\."), "batch_norm."),
    (re.compile(r"\.norm1\."), ".layernorm_before."),
    (re.compile(r"\.norm2\."), ".layernorm_after."),
    (re.compile(r"\.attn\.proj\."), ".attention.output.dense."),
    (re.compile(r"\.attn\.relative_position_"), ".attention.self.relative_position_"),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
)
# The in-model STFT and mel (the front-end does them), the unused `head`, and the shifted-window masks, which
# ClapAudioModel computes itself.
_DROPPED = re.compile(r"^(spectrogram_extractor|logmel_extractor|head)\.|\.attn_mask$")
_QKV = re.compile(r"\.attn\.qkv\.(weight|bias)$")


def convert_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HTS-AT's `state_dict` (without `sed_model.`) -> `HTSATBackbone`'s names.

    `attn.qkv` is split into query, key, value (its output rows are q, k, v in that order, as HTS-AT reshapes it).
    Integer buffers come back as integers: HTS-AT's weight-averaged `Saved_*` files store every tensor as float.
    """
    converted = {}
    for name, tensor in state.items():
        if _DROPPED.search(name):
            continue
        if name.startswith("tscam_conv."):
            converted[name] = tensor
            continue
        if qkv := _QKV.search(name):
            stem = name[: qkv.start()] + ".attention.self."
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
                converted[f"htsat.audio_encoder.{stem}{part}.{qkv.group(1)}"] = chunk.clone()
            continue
        for pattern, replacement in _RENAMES:
            name = pattern.sub(replacement, name)
        if name.endswith(("relative_position_index", "num_batches_tracked")):
            tensor = tensor.round().long()
        converted[f"htsat.audio_encoder.{name}"] = tensor
    return converted


def config_from_original(state: dict[str, torch.Tensor]) -> HTSATConfig:
    """The architecture as the file has it: widths, depths, heads, window and classes are read from the tensors."""
    if "patch_embed.proj.weight" not in state or "layers.0.blocks.0.attn.relative_position_bias_table" not in state:
        return HTSATConfig()  # not an HTS-AT file: load_matching then says which family it is not
    stages = sorted({int(m.group(1)) for key in state if (m := re.match(r"layers\.(\d+)\.", key))})
    depths = [len({k.split(".")[3] for k in state if k.startswith(f"layers.{i}.blocks.")}) for i in stages]
    tables = [state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in stages]
    dim = state["patch_embed.proj.weight"].shape[0]
    settings = {
        "patch_embeds_hidden_size": dim,
        "patch_size": state["patch_embed.proj.weight"].shape[-1],
        "enable_patch_layer_norm": "patch_embed.norm.weight" in state,
        "depths": depths,
        "num_attention_heads": [table.shape[1] for table in tables],
        "window_size": (round(tables[0].shape[0] ** 0.5) + 1) // 2,
        "mlp_ratio": state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dim,
        "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in state,
        "hidden_size": dim * 2 ** (len(depths) - 1),
        "audioset_head": "tscam_conv.weight" in state,
    }
    if "bn0.weight" in state:
        settings["num_mel_bins"] = state["bn0.weight"].shape[0]
    if "tscam_conv.weight" in state:
        settings["num_classes"] = state["tscam_conv.weight"].shape[0]
    return HTSATConfig(**settings)


def from_original_checkpoint(path: str | Path) -> HTSATBackbone:
    """An `HTSATBackbone` with the weights of one of HTS-AT's own `.ckpt` files (or a plain state dict of them)."""
    with reading_checkpoint(path, "HTS-AT"):
        tensors = tensors_of(load_torch_checkpoint(path), path, keys=("state_dict", "model"))  # "model": PANNs
        state = {name.removeprefix("sed_model."): tensor for name, tensor in tensors.items()}
        config, converted = config_from_original(state), convert_original_state_dict(state)
        with torch.device("meta"), warnings.catch_warnings():  # names and shapes, without allocating: fails fast
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")  # the check's own load
            load_matching(HTSATBackbone(config), converted, "HTS-AT", str(path))
        return _with_weights(config, converted)


def _with_weights(config: HTSATConfig, state: dict[str, torch.Tensor]) -> HTSATBackbone:
    """The module holding `state`'s tensors (all of its weights), without initialising weights it then replaces."""
    with torch.device("meta"):
        backbone = HTSATBackbone(config)
    backbone.load_state_dict(state, strict=True, assign=True)
    return backbone.eval()


# -- CLAP's audio tower --------------------------------------------------------------------------------------------


def from_clap_audio_tower(source: str) -> HTSATBackbone:
    """An `HTSATBackbone` (no AudioSet head, `htsat` front-end) from a CLAP checkpoint: a whole `ClapModel` such as
    `laion/clap-htsat-unfused` or a saved `ClapAudioModel`, on the Hub or in a folder."""
    try:
        # A ClapModel checkpoint names the tower `audio_model.audio_encoder.*`; ClapAudioModel wants `audio_encoder.*`
        # and would otherwise be left randomly initialised, with a mere warning.
        pinned = {"revision": CLAP_UNFUSED_REVISION} if source == CLAP_UNFUSED else {}  # the registered release
        tower, info = ClapAudioModel.from_pretrained(
            source, key_mapping={r"^audio_model\.": ""}, output_loading_info=True, **pinned
        )
    except OSError as err:
        reason = str(err).splitlines()[0]
        raise FileNotFoundError(
            f"{source!r} is neither an HTS-AT checkpoint file, nor a known release ({', '.join(HTSAT_RELEASES)}), "
            f"nor a CLAP model that could be loaded from the Hugging Face Hub or a folder ({reason}). Offline "
            "(HF_HUB_OFFLINE), a Hub model must already be in the Hugging Face cache: download it once online, e.g. "
            f"`hf download {source}`, or pass a local folder."
        ) from err
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise CheckpointError(f"{source}: not a CLAP audio tower; missing {len(missing)} weights, e.g. {missing[:4]}.")
    if tower.config.enable_fusion:
        raise CheckpointError(f"{source}: a fused CLAP model (4-channel input); use an unfused one.")
    own = set(ClapAudioConfig.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__)
    settings = {k: v for k, v in tower.config.to_dict().items() if k in own}
    # 1001 frames: CLAP's extractor pads (or crops) clips to 10 s, 480,000 samples at 48 kHz / hop 480.
    max_frames = min(1001, settings["spec_size"] * (settings["spec_size"] // settings["num_mel_bins"]))
    config = HTSATConfig(**settings, frontend_preset="htsat", max_frames=max_frames, audioset_head=False)
    return _with_weights(config, {f"htsat.{name}": tensor for name, tensor in tower.state_dict().items()})


__all__ = [
    "HTSATBackbone",
    "HTSATConfig",
    "CLAP_RELEASES",
    "HTSAT_RELEASES",
    "config_from_original",
    "convert_original_state_dict",
    "from_clap_audio_tower",
    "from_original_checkpoint",
]
