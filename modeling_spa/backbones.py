"""The audio backbone registry: name -> config type, front-end preset, builder, pooled size.

A backbone module maps log-mel features (B, frames, mels), a frame mask and the `output_hidden_states` /
`output_attentions` flags to a `BaseModelOutputWithPooling` whose `pooler_output` is the pooled embedding (B, U);
`hidden_states` and `attentions` are its own (None when not asked for or when it has none). A module that must not be
split across devices declares it as transformers models do, in a `_no_split_modules` attribute of the backbone module.
Adding a backbone is one file with its module and config plus one `register_backbone` call here; a converter for
its authors' checkpoints goes to `modeling_spa/conversion/` (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from transformers import ASTConfig, AutoConfig, PreTrainedConfig, Wav2Vec2Config

from .backbone_ast import ASTBackbone
from .backbone_cnn14 import Cnn14Backbone, Cnn14Config
from .backbone_demo_cnn import DemoCNNBackbone, DemoCNNConfig
from .backbone_htsat import HTSATBackbone, HTSATConfig
from .backbone_hub import (
    HUB_FAMILIES,
    HubBackbone,
    hub_frontend_preset,
    hub_frontend_settings,
    hub_input_size,
    hub_max_frames,
)
from .backbone_passt import PaSSTBackbone, PaSSTConfig
from .backbone_psla import PSLABackbone, PSLAConfig
from .frontend import frontend_preset
from .frontends import feature_size, frontend_kind


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone family.

    Attributes:
        name: registry key, stored in `SPAConfig.backbone`.
        config_class: its configuration class; `config_class.model_type` is stored with the config.
        frontend: name of its front-end preset in `FRONTEND_PRESETS`, or config -> name where it depends on the
            checkpoint (HTS-AT: 32 kHz as trained on AudioSet, 48 kHz as CLAP's audio tower).
        build: config -> module with `forward(features, frame_mask, output_hidden_states, output_attentions)`.
        pooled_size: config -> U, the size of the pooled embedding.
        max_frames: config -> the frames the backbone takes at most, or None for any length; the front-end's
            `max_frames` must equal it (the default reads `config.max_length`, as AST's config has it).
        input_size: config -> the features per frame it takes (the front-end's mel bins, stacked), None for a waveform.
        fit_frontend: (config, preset) -> the preset fitted to the config, where a checkpoint's size decides
            settings (Whisper's mel bins and frames).
        config_types: for a backbone of several families ("hub"), the model types it takes; a dict's `model_type`
            then picks the config class through `AutoConfig.for_model`, and `config_class` is the default.

    A backbone module that keeps its family's original AudioSet head (off the SPA path) implements
    `audioset_scores(features, frame_mask) -> (B, 527)` probabilities, the published model's own predictions, and
    names the head's submodules in `audioset_head_modules` (frozen for training: they take no part in the loss).
    """

    name: str
    config_class: type[PreTrainedConfig]
    frontend: str | Callable[[PreTrainedConfig], str]
    build: Callable[[PreTrainedConfig], nn.Module]
    pooled_size: Callable[[PreTrainedConfig], int]
    max_frames: Callable[[PreTrainedConfig], int | None] = lambda config: getattr(config, "max_length", None)
    input_size: Callable[[PreTrainedConfig], int | None] = lambda config: config.num_mel_bins
    fit_frontend: Callable[[PreTrainedConfig, dict], dict] | None = None
    config_types: tuple[str, ...] = ()

    def frontend_name(self, config: PreTrainedConfig) -> str:
        return self.frontend if isinstance(self.frontend, str) else self.frontend(config)

    def frontend_settings(self, config: PreTrainedConfig) -> dict:
        """The front-end a model of `config` gets by default: its preset, fitted to the config where it must be."""
        settings = frontend_preset(self.frontend_name(config))
        return settings if self.fit_frontend is None else self.fit_frontend(config, settings)

    @property
    def config_type(self) -> str:
        return self.config_class.model_type

    @property
    def model_types(self) -> tuple[str, ...]:
        return self.config_types or (self.config_type,)

    def make_config(self, config: PreTrainedConfig | dict | None) -> PreTrainedConfig:
        """A config instance from an instance, a dict (as read from config.json) or None (the defaults).

        Resolved here rather than through AutoConfig, which may not know our backbone types (remote code).
        """
        if config is None or isinstance(config, dict):
            kwargs = dict(config or {})
            model_type = kwargs.pop("model_type", self.config_type)
            self._check_type(model_type)
            if self.config_types:  # transformers knows each family's class
                return AutoConfig.for_model(model_type, **kwargs)
            return self.config_class(**kwargs)
        return config

    def _check_type(self, model_type: str) -> None:
        if model_type not in self.model_types:
            raise ValueError(
                f"Backbone {self.name!r} needs a config of type {' or '.join(map(repr, self.model_types))}, "
                f"got {model_type!r}."
            )

    def check(self, config: PreTrainedConfig, frontend: dict) -> None:
        """Raise if the front-end does not produce what the backbone expects."""
        self._check_type(config.model_type)
        expected_kind = frontend_kind(self.frontend_settings(config))
        if frontend_kind(frontend) != expected_kind:
            raise ValueError(f"The {self.name} backbone ({config.model_type}) takes a {expected_kind!r} front-end, "
                             f"got a {frontend_kind(frontend)!r} one.")  # fmt: skip
        if feature_size(frontend) != self.input_size(config):
            raise ValueError(
                f"The front-end makes {feature_size(frontend)} features per frame but the {self.name} backbone "
                f"({config.model_type}) takes {self.input_size(config)}."
            )
        max_length = self.max_frames(config)
        if max_length is not None and frontend.get("max_frames") != max_length:
            raise ValueError(
                f"The {self.name} backbone takes exactly {max_length} frames: set frontend['max_frames'] to "
                f"{max_length} (got {frontend.get('max_frames')})."
            )


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> None:
    BACKBONES[spec.name] = spec


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; registered: {sorted(BACKBONES)}.")
    return BACKBONES[name]


register_backbone(BackboneSpec("demo_cnn", DemoCNNConfig, "tiny", DemoCNNBackbone, lambda c: c.hidden_sizes[-1]))
register_backbone(BackboneSpec("ast", ASTConfig, "ast", ASTBackbone, lambda c: c.hidden_size))
register_backbone(BackboneSpec("cnn14", Cnn14Config, "cnn14", Cnn14Backbone, lambda c: c.embedding_size))
register_backbone(
    BackboneSpec(
        "htsat",
        HTSATConfig,
        lambda c: c.frontend_preset,  # cnn14 (32 kHz, HTS-AT's AudioSet checkpoints) or htsat (48 kHz, CLAP's tower)
        HTSATBackbone,
        lambda c: c.pooled_size,
        max_frames=lambda c: c.max_frames,
    )
)
register_backbone(BackboneSpec("psla", PSLAConfig, "psla", PSLABackbone, lambda c: c.hidden_dim))
register_backbone(
    BackboneSpec("passt", PaSSTConfig, lambda c: c.frontend_preset, PaSSTBackbone, lambda c: c.hidden_size)
)
register_backbone(
    BackboneSpec(
        "hub",  # transformers' speech encoders, by their own config (backbone_hub.HUB_FAMILIES)
        Wav2Vec2Config,  # the default: transformers' audio-classification example starts from wav2vec2-base
        hub_frontend_preset,
        HubBackbone,
        lambda c: c.hidden_size,
        max_frames=hub_max_frames,
        input_size=hub_input_size,
        fit_frontend=hub_frontend_settings,
        config_types=HUB_FAMILIES,
    )
)
