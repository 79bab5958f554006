"""The model a run trains: built from a backbone and the run's classes, or taken from a checkpoint to fine-tune
with this run's objective (re-headed, with SPA kept, when the run's classes are not the checkpoint's)."""

from __future__ import annotations

import json
import os

from ..augmentation import AugmentationConfig
from ..configuration_spa import MULTI_LABEL, check_spa_objective
from ..conversion.building import rehead
from ..frontend import frontend_preset
from ..modeling_spa import SPAForAudioClassification
from ..taxonomy import load_taxonomy, read_label_list
from .inputs import own_data

DEFAULT_TEXT_ENCODER = "google-bert/bert-base-uncased"  # the paper's, for new models


def run_classes(data_args):
    """(taxonomy, class ids, problem type) of the run: a user's dataset brings its own (`data.sources`); an
    AudioSet-format build has AudioSet's ontology (or `--taxonomy`) and `--classes` (default: the taxonomy's)."""
    own = own_data(data_args)
    if own is not None:
        return own.taxonomy, own.classes, own.problem_type
    taxonomy = load_taxonomy(data_args.taxonomy)
    ids = taxonomy.ids_of(read_label_list(data_args.classes)) if data_args.classes else list(taxonomy.label_ids)
    return taxonomy, ids, MULTI_LABEL


def local_copy(text_encoder: str | None, config) -> str | None:
    """The `--text_encoder` re-heading may use instead of a checkpoint's own: a local folder (a copy of that encoder,
    for offline use). Another Hub id (a config's default for new models, say) is not used: the checkpoint's p_t takes
    its own encoder's embeddings; a note says so."""
    if text_encoder is None or text_encoder == config.label_text_encoder:
        return None
    if os.path.isdir(text_encoder):
        return text_encoder
    print(f"Note: --text_encoder {text_encoder} is not this checkpoint's text encoder ({config.label_text_encoder}); "
          "the new classes' label texts are embedded with the checkpoint's, whose embeddings its p_t takes. To use a "
          "local copy of it, pass that folder.")  # fmt: skip
    return None


def build_model(model_args, data_args, augmentation: AugmentationConfig):
    model = new_model(model_args, data_args)
    if model.config.frontend.get("max_frames") is None:  # any-length backbone: inference windows = training clips
        model.config.window_length_s = data_args.max_length_s
    # This run's augmentation, applied by the model in training mode and recorded in its config (None: none).
    model.config.augmentation = augmentation.to_dict() if augmentation != AugmentationConfig() else None
    # p_t at α = 0 and the backbone's original AudioSet head take no part in the loss: frozen, they are out of the
    # optimizer and DDP waits for no gradient.
    model.freeze_unused()
    if getattr(model_args, "freeze_feature_encoder", False):  # after loading, which makes every parameter trainable
        model.freeze_feature_encoder()
    return model


OBJECTIVE_FIELDS = ("spa_alpha", "classification_loss", "spa_objective", "spa_temperature", "spa_uniformity_weight",
                    "spa_geometry_weight", "freeze_text_projection")  # fmt: skip


def new_model(model_args, data_args) -> SPAForAudioClassification:
    """A new model for the run's classes, or `--init_from`'s checkpoint with this run's objective, re-headed to the
    run's classes (`conversion.rehead`: new classifier, the classes' label texts and distances) when they differ."""
    taxonomy, ids, problem_type = run_classes(data_args)
    if model_args.init_from:
        model = SPAForAudioClassification.from_pretrained(model_args.init_from)
        if model.config.center_label_text != model_args.center_label_text:  # it changes p_t's parameters
            raise ValueError(f"{model_args.init_from} was built with center_label_text="
                             f"{model.config.center_label_text}: give the same --center_label_text.")  # fmt: skip
        if list(model.config.label_mids or []) != ids or model.config.problem_type != problem_type:
            model = rehead(model, taxonomy, ids, local_copy(model_args.text_encoder, model.config), problem_type)
            model.reheaded = True  # a new classifier: it starts at the class prior (train.py)
        for name in OBJECTIVE_FIELDS:
            setattr(model.config, name, getattr(model_args, name))
        check_spa_objective(model.config)
        return model
    return SPAForAudioClassification.from_backbone(
        backbone=model_args.backbone,
        audio_config=json.loads(model_args.audio_config) if model_args.audio_config else None,
        pretrained_backbone=model_args.pretrained_backbone,
        label_mids=ids,
        taxonomy=taxonomy,
        text_encoder=model_args.text_encoder or DEFAULT_TEXT_ENCODER,
        text_encoder_revision=model_args.text_encoder_revision,
        text_pooling=model_args.text_pooling,
        description_style=model_args.description_style,
        projection_dim=model_args.projection_dim,
        problem_type=problem_type,
        **({"frontend": frontend_preset(model_args.frontend)} if model_args.frontend else {}),
        **{name: getattr(model_args, name) for name in (*OBJECTIVE_FIELDS, "center_label_text")},
    )
