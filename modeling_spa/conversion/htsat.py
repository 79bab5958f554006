"""HTS-AT's weights -> `HTSATBackbone`: its own Lightning `.ckpt` files (keys `sed_model.*`, renamed to
`ClapAudioModel`'s with `attn.qkv` split in three, the architecture read from the file), or CLAP's audio tower from
the Hub or a folder (48 kHz, no AudioSet head)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from transformers import ClapAudioConfig, ClapAudioModel, PreTrainedConfig

from ..backbone_htsat import HTSATBackbone, HTSATConfig
from .checkpoints import (
    CheckpointError,
    load_matching,
    load_torch_checkpoint,
    reading_checkpoint,
    resolve_checkpoint,
    tensors_of,
)
from .releases import CLAP_UNFUSED, CLAP_UNFUSED_REVISION, releases_of

# HTS-AT's own checkpoint files by short name (CLAP's tower loads through transformers).
HTSAT_RELEASES = {name: r for name, r in releases_of("htsat").items() if name != CLAP_UNFUSED}


def load(source: str | os.PathLike) -> HTSATBackbone:
    """HTS-AT's weights from an original `.ckpt` file, a release's short name, or a CLAP model (Hub id/folder)."""
    source = str(source)
    if Path(source).is_file() or source in HTSAT_RELEASES:
        return from_original_checkpoint(resolve_checkpoint(source))
    return from_clap_audio_tower(source)


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
