"""Building a new SPA model: a backbone (fresh, or converted from its authors' checkpoint), the label descriptions of
a taxonomy embedded once by a frozen text encoder, and the classes' ontology distances.

`from_backbone` is attached to `SPAForAudioClassification` when the package is imported, so users call
`SPAForAudioClassification.from_backbone(...)`. It is not in the model's file: it needs the ontology files, a text
encoder and the converters, none of which a checkpoint's remote code carries (DESIGN.md section 10).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.utils import logging

from ..backbones import backbone_spec
from ..configuration_spa import SPAConfig
from ..label_text import DEFAULT_PROMPT, encode_label_descriptions
from ..taxonomy import AudioSetOntology, check_distinct_descriptions
from .loading import load_backbone

logger = logging.get_logger(__name__)


def from_backbone(
    cls,
    backbone: str = "passt",
    audio_config: PreTrainedConfig | dict | None = None,
    pretrained_backbone: str | None = None,
    label_mids: Sequence[str] | None = None,
    ontology=None,
    text_encoder: str = "google-bert/bert-base-uncased",
    text_encoder_revision: str | None = None,
    text_pooling: str = "mean",
    description_style: str = "concat",
    prompt_template: str = DEFAULT_PROMPT,
    **config_kwargs,
):
    """Build a new SPA model (`cls`, e.g. `SPAForAudioClassification`): label descriptions from the ontology,
    embedded once by the frozen text encoder.

    Args:
        backbone: registered backbone name; `audio_config` its config (default: the family's defaults).
        pretrained_backbone: a checkpoint the backbone family can load (a file, a release's short name, a Hub id:
            `modeling_spa.conversion.load_backbone`; `backbone="hub"` takes any checkpoint of transformers' speech
            encoders, e.g. "microsoft/wavlm-base-plus"), or None. With it, `audio_config` (a dict) overrides fields of
            the checkpoint's config (`{"use_weighted_layer_sum": True}`, `{"spa_pooling": "attention"}`,
            `{"mask_time_prob": 0.1}`); layers the overrides add start from their initialisation, and overrides that
            drop weights of the checkpoint are an error. The checkpoint's front-end settings (its feature
            extractor's, for "hub") are the default front-end.
        label_mids: the classes (default: the 527 AudioSet labels, in CSV order).
        ontology: an `AudioSetOntology` (default: `AudioSetOntology.load()`).
        text_encoder, text_encoder_revision, text_pooling: the frozen text encoder f_t.
        description_style, prompt_template: how labels become text (paper section 3.1).
        config_kwargs: other `SPAConfig` fields (`projection_dim`, `spa_alpha`, `frontend`, ...).
    """
    ontology = ontology if ontology is not None else AudioSetOntology.load()
    mids = list(label_mids) if label_mids is not None else ontology.label_mids
    texts = ontology.descriptions(description_style, mids, prompt_template)
    check_distinct_descriptions(texts, [ontology.name(mid, "full") for mid in mids])  # one text, one target
    backbone_spec(backbone)  # an unknown name fails before the text encoder runs
    if pretrained_backbone is not None:
        pretrained = load_backbone(backbone, pretrained_backbone)
        if hasattr(pretrained, "config"):
            audio_config = with_overrides(pretrained.config, audio_config)
        if getattr(pretrained, "frontend_settings", None) is not None:
            config_kwargs.setdefault("frontend", pretrained.frontend_settings)
        # Provenance without the local directory layout: a file by its name, a short name or Hub id as given.
        source = str(pretrained_backbone)
        source = os.path.basename(os.path.normpath(source)) if os.path.exists(source) else source
        config_kwargs.setdefault("pretrained_backbone", source)
    text = encode_label_descriptions(texts, text_encoder, text_encoder_revision, text_pooling)
    config = SPAConfig(
        backbone=backbone,
        audio_config=audio_config,
        label_mids=mids,
        label_names=[ontology.name(mid, "full") for mid in mids],
        label_paths=ontology.descriptions("concat", mids),
        text_hidden_size=text.shape[1],
        label_text_encoder=text_encoder,
        label_text_encoder_revision=text_encoder_revision,
        label_text_pooling=text_pooling,
        description_style=description_style,
        prompt_template=prompt_template,
        **config_kwargs,
    )
    model = cls(config)
    if pretrained_backbone is not None:
        load_pretrained(model.spa.backbone, pretrained, pretrained_backbone)
    model.set_label_text(text)
    with torch.no_grad():
        model.label_distances.copy_(torch.from_numpy(ontology.distances_for(mids)))
    return model


def with_overrides(config: PreTrainedConfig, overrides: PreTrainedConfig | dict | None) -> PreTrainedConfig:
    """A copy of a checkpoint's config with the fields of `overrides` (a dict) set; a config instance replaces it."""
    if overrides is None:
        return config
    if not isinstance(overrides, dict):
        return overrides
    config = copy.deepcopy(config)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def load_pretrained(backbone: nn.Module, pretrained: nn.Module, source: str) -> None:
    """The pretrained weights into the new model's backbone: all of them; parameters only the config overrides
    created (a pooling layer) keep their initialisation."""
    missing, unexpected = backbone.load_state_dict(pretrained.state_dict(), strict=False)
    if unexpected:
        raise ValueError(
            f"The audio_config overrides drop {len(unexpected)} weights of {source}, e.g. {sorted(unexpected)[:4]}: "
            "override only settings that keep the checkpoint's layers."
        )
    if missing:
        logger.info(f"New in the backbone, initialised (not in {source}): {sorted(missing)}")
