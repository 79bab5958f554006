"""transformers' speech encoders as SPA backbones (registry name `"hub"`): the families of transformers'
audio-classification mapping other than AST (which is its own backbone), each built from its own config.

The sub-config of an SPA model is the family's config (`WavLMConfig`, `WhisperConfig`, ...), so any checkpoint of these
families loads by Hub id or folder (`modeling_spa.conversion.hub`). The encoder is the family's own model class
(`Wav2Vec2Model`, `WavLMModel`, ...; Whisper's `WhisperEncoder`: an encoder-decoder contributes its encoder only).

| family (model_type) | input | front-end preset | LoRA targets |
|---|---|---|---|
| wav2vec2, hubert, data2vec-audio, sew, unispeech, unispeech-sat | waveform | `waveform` | q_proj, v_proj |
| wavlm | waveform | `waveform` | intermediate_dense, output_dense |
| sew-d | waveform | `waveform` | query_proj, value_proj |
| wav2vec2-conformer | waveform | `waveform` | linear_q, linear_v |
| wav2vec2-bert | 160 stacked fbank features | `w2v_bert` | linear_q, linear_v |
| whisper | 30 s log-mel, 80 or 128 bins | `whisper`, `whisper_128` | q_proj, v_proj |

Padding, as each family's config asks: the encoder gets the attention mask unless its config says
`feat_extract_norm == "group"` (wav2vec2-base and the other group-norm models were trained on zero-padded batches
without one, and their extractors return none) or it is Whisper (whose encoder takes no mask: the clip is padded to
30 s with zeros, as it was trained). The pooling always uses the mask: only the frames of the clip's real audio count.

Pooling (the pooled embedding, `pooler_output`, of size `hidden_size`), as transformers' `*ForSequenceClassification`:
- the frames: the last hidden state, or with the config's own `use_weighted_layer_sum` the softmax-weighted sum of
  every layer's hidden states (embeddings included), with learned weights (SUPERB);
- over time: the mean over the real frames (`spa_pooling="mean"`, the default), or attention pooling
  (`spa_pooling="attention"`: a learned linear score per frame, softmax over the real frames). `spa_pooling` is set
  on the family's config (e.g. `audio_config={"spa_pooling": "attention"}`); the family's classes ignore it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import MODEL_MAPPING, PreTrainedConfig, WhisperConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.whisper.modeling_whisper import WhisperEncoder

# The families of transformers' MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES (5.25) other than AST, by their input.
WAVEFORM_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "sew", "sew-d", "unispeech", "unispeech-sat",
                     "wav2vec2-conformer")  # fmt: skip
HUB_FAMILIES = (*WAVEFORM_FAMILIES, "wav2vec2-bert", "whisper")
POOLINGS = ("mean", "attention")
# PEFT LoRA targets: each family's attention query and value projections, by their names in transformers 5. WavLM's
# attention hands its projections' weights to torch's functional multi-head attention without calling the modules, so
# LoRA there would never run: its feed-forward layers instead.
LORA_TARGETS = {family: ["q_proj", "v_proj"] for family in HUB_FAMILIES}
LORA_TARGETS["wavlm"] = ["intermediate_dense", "output_dense"]
LORA_TARGETS["sew-d"] = ["query_proj", "value_proj"]
LORA_TARGETS["wav2vec2-conformer"] = LORA_TARGETS["wav2vec2-bert"] = ["linear_q", "linear_v"]


def check_family(config: PreTrainedConfig) -> None:
    """Raise unless `config` is a supported family's, naming the supported ones."""
    model_type = config.model_type
    if model_type == "audio-spectrogram-transformer":
        raise ValueError("AST is a backbone of its own: use backbone='ast' (pretrained_backbone takes AST's Hub ids).")
    if model_type not in HUB_FAMILIES:
        raise ValueError(f"The 'hub' backbone takes transformers' speech encoders of the families "
                         f"{', '.join(HUB_FAMILIES)}; got a {model_type!r} model.")  # fmt: skip
    if getattr(config, "add_adapter", False):  # transformers' classification heads refuse it too
        raise ValueError(f"A {model_type} encoder with an adapter (add_adapter=True) is not supported.")
    if getattr(config, "spa_pooling", "mean") not in POOLINGS:
        raise ValueError(f"spa_pooling must be one of {POOLINGS}, got {config.spa_pooling!r}.")


def hub_frontend_preset(config: PreTrainedConfig) -> str:
    """The front-end preset of a family's config (its mel bins decide between Whisper's two)."""
    if config.model_type == "whisper":
        return "whisper_128" if config.num_mel_bins == 128 else "whisper"
    return "w2v_bert" if config.model_type == "wav2vec2-bert" else "waveform"


def receptive_field(config: PreTrainedConfig) -> int:
    """Samples under one output frame of a wav2vec2-style CNN: the shortest clip that gives a frame (400 at base)."""
    field, jump = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        field, jump = field + (kernel - 1) * jump, jump * stride
    return field


def hub_frontend_settings(config: PreTrainedConfig, preset: dict) -> dict:
    """The family's front-end preset fitted to `config`: Whisper's mel bins and input length, the waveform's
    shortest clip (extractor settings such as `do_normalize` come from the checkpoint: `conversion.hub`)."""
    settings = dict(preset)
    if config.model_type == "whisper":
        frames = 2 * config.max_source_positions  # conv2 halves the frames
        settings.update(n_mels=config.num_mel_bins, max_frames=frames, max_samples=frames * settings["hop_length"])
    elif config.model_type in WAVEFORM_FAMILIES:
        settings["min_samples"] = receptive_field(config)
    return settings


def hub_input_size(config: PreTrainedConfig) -> int | None:
    """Features per frame the encoder takes: mel bins (Whisper), stacked fbank (wav2vec2-BERT), none (waveform)."""
    if config.model_type == "whisper":
        return config.num_mel_bins
    return config.feature_projection_input_dim if config.model_type == "wav2vec2-bert" else None


def hub_max_frames(config: PreTrainedConfig) -> int | None:
    return 2 * config.max_source_positions if config.model_type == "whisper" else None


def encoder_class(config: PreTrainedConfig) -> type[nn.Module]:
    """The family's encoder: its base model (`AutoModel`'s class), or Whisper's encoder alone."""
    return WhisperEncoder if isinstance(config, WhisperConfig) else MODEL_MAPPING[type(config)]


class HubBackbone(nn.Module):
    """A transformers speech encoder -> (B, hidden_size) pooled embedding (see the module docstring).

    `forward(features, frame_mask)` takes the front-end's output: the normalised waveform (B, samples) and its sample
    mask, or features (B, frames, size) and their frame mask. `hidden_states` and `attentions` are the encoder's own.
    """

    def __init__(self, config: PreTrainedConfig, encoder: nn.Module | None = None):
        super().__init__()
        check_family(config)
        self.encoder = encoder if encoder is not None else encoder_class(config)(config)
        self._no_split_modules = list(getattr(self.encoder, "_no_split_modules", None) or [])
        self.is_whisper = config.model_type == "whisper"
        self.input_name = "input_values" if config.model_type in WAVEFORM_FAMILIES else "input_features"
        self.masks_encoder = not self.is_whisper and getattr(config, "feat_extract_norm", "layer") != "group"
        self.pooling = getattr(config, "spa_pooling", "mean")
        if config.use_weighted_layer_sum:
            layers = config.num_hidden_layers + 1  # the embeddings' output and every layer's
            self.layer_weights = nn.Parameter(torch.ones(layers) / layers)
        if self.pooling == "attention":
            self.attention = nn.Linear(config.hidden_size, 1)
        # Layer-wise decay (training.optimization): modules registered before the blocks but applied after them.
        stable = config.model_type == "wav2vec2-conformer" or getattr(config, "do_stable_layer_norm", False)
        self.output_modules = ("encoder.encoder.layer_norm",) if stable else ()

    @property
    def config(self) -> PreTrainedConfig:
        return self.encoder.config

    def freeze_feature_encoder(self) -> None:
        """Freeze the CNN feature encoder, as transformers' `freeze_feature_encoder()` does (wav2vec2-style models)."""
        feature_encoder = getattr(self.encoder, "feature_extractor", None)
        if not hasattr(feature_encoder, "_freeze_parameters"):
            raise ValueError(f"A {self.config.model_type} encoder has no CNN feature encoder to freeze; these have: "
                             f"{', '.join(WAVEFORM_FAMILIES)}.")  # fmt: skip
        feature_encoder._freeze_parameters()

    def frame_mask(self, mask: torch.Tensor | None, frames: int, device: torch.device) -> torch.Tensor:
        """(B, frames) bool: the encoder's output frames that the real input produces, by the family's own
        `_get_feat_extract_output_lengths` (the CNN's, Whisper's stride 2, wav2vec2-BERT's identity)."""
        if mask is None:
            return torch.ones(1, frames, dtype=torch.bool, device=device)
        lengths = self.encoder._get_feat_extract_output_lengths(mask.long().sum(dim=-1))
        return torch.arange(frames, device=device) < lengths.to(device)[:, None]

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, frames, H) -> (B, H) over the real frames, accumulated in float32, returned in the hidden dtype."""
        values = hidden.float()
        if self.pooling == "attention":
            scores = self.attention(hidden).squeeze(-1).float().masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1).nan_to_num(0.0)  # a clip without frames: all -inf
        else:
            weights = mask.float() / mask.sum(dim=-1, keepdim=True).clamp_min(1)
        return torch.einsum("bt,bth->bh", weights, values).to(hidden.dtype)

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        inputs = features.transpose(1, 2) if self.is_whisper else features  # Whisper takes (B, mels, frames)
        weighted = hasattr(self, "layer_weights")
        outputs = self.encoder(
            **{self.input_name: inputs},
            attention_mask=frame_mask.long() if self.masks_encoder and frame_mask is not None else None,
            output_hidden_states=output_hidden_states or weighted,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state
        if weighted:
            stacked = torch.stack(outputs.hidden_states, dim=1)
            hidden = (stacked * self.layer_weights.softmax(dim=-1).view(-1, 1, 1)).sum(dim=1)
        pooled = self.pool(hidden, self.frame_mask(frame_mask, hidden.shape[1], hidden.device))
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=pooled,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions if output_attentions else None,
        )


__all__ = [
    "HUB_FAMILIES",
    "LORA_TARGETS",
    "WAVEFORM_FAMILIES",
    "HubBackbone",
    "check_family",
    "hub_frontend_preset",
    "hub_frontend_settings",
    "hub_input_size",
    "hub_max_frames",
]
