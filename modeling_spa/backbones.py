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
from transformers import ASTConfig, PreTrainedConfig

from .backbone_ast import ASTBackbone
from .backbone_cnn14 import Cnn14Backbone, Cnn14Config
from .backbone_demo_cnn import DemoCNNBackbone, DemoCNNConfig
from .backbone_htsat import HTSATBackbone, HTSATConfig
from .backbone_passt import PaSSTBackbone, PaSSTConfig
from .backbone_psla import PSLABackbone, PSLAConfig


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone family.

    Attributes:
        name: registry key, stored in `SPAConfig.backbone`.
        config_class: its configuration class; `config_class.model_type` is stored with the config.
        frontend: name of its log-mel preset in `FRONTEND_PRESETS`, or config -> name where it depends on the
            checkpoint (HTS-AT: 32 kHz as trained on AudioSet, 48 kHz as CLAP's audio tower).
        build: config -> module with `forward(features, frame_mask, output_hidden_states, output_attentions)`.
        pooled_size: config -> U, the size of the pooled embedding.
        max_frames: config -> the frames the backbone takes at most, or None for any length; the front-end's
            `max_frames` must equal it (the default reads `config.max_length`, as AST's config has it).

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

    def frontend_name(self, config: PreTrainedConfig) -> str:
        return self.frontend if isinstance(self.frontend, str) else self.frontend(config)

    @property
    def config_type(self) -> str:
        return self.config_class.model_type

    def make_config(self, config: PreTrainedConfig | dict | None) -> PreTrainedConfig:
        """A config instance from an instance, a dict (as read from config.json) or None (the defaults).

        Resolved here rather than through AutoConfig, which may not know our backbone types (remote code).
        """
        if config is None or isinstance(config, dict):
            kwargs = dict(config or {})
            model_type = kwargs.pop("model_type", self.config_type)
            if model_type != self.config_type:
                raise ValueError(f"Backbone {self.name!r} needs a {self.config_type!r} config, got {model_type!r}.")
            return self.config_class(**kwargs)
        return config

    def check(self, config: PreTrainedConfig, frontend: dict) -> None:
        """Raise if the front-end does not produce what the backbone expects."""
        if config.model_type != self.config_type:
            raise ValueError(f"Backbone {self.name!r} needs a {self.config_type!r} config, got {config.model_type!r}.")
        if frontend["n_mels"] != config.num_mel_bins:
            raise ValueError(
                f"The front-end makes {frontend['n_mels']} mel bins but the {self.name} backbone expects "
                f"num_mel_bins={config.num_mel_bins}."
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
