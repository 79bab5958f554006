"""The model a run trains: built from a backbone and the run's classes, or taken from a checkpoint to fine-tune
with this run's objective."""

from __future__ import annotations

import json
from pathlib import Path

from ..augmentation import AugmentationConfig
from ..configuration_spa import check_spa_objective
from ..frontend import frontend_preset
from ..modeling_spa import SPAForAudioClassification


def class_mids(data_args) -> list[str] | None:
    """The `classes` file: a JSON list of mids, or an object with a "mids" list (as the demo builder writes)."""
    if not data_args.classes:
        return None
    classes = json.loads(Path(data_args.classes).read_text())
    return classes["mids"] if isinstance(classes, dict) else classes


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
    if model_args.init_from:
        model = SPAForAudioClassification.from_pretrained(model_args.init_from)
        if model.config.center_label_text != model_args.center_label_text:  # it changes p_t's parameters
            raise ValueError(f"{model_args.init_from} was built with center_label_text="
                             f"{model.config.center_label_text}: give the same --center_label_text.")  # fmt: skip
        for name in OBJECTIVE_FIELDS:
            setattr(model.config, name, getattr(model_args, name))
        check_spa_objective(model.config)
        return model
    return SPAForAudioClassification.from_backbone(
        backbone=model_args.backbone,
        audio_config=json.loads(model_args.audio_config) if model_args.audio_config else None,
        pretrained_backbone=model_args.pretrained_backbone,
        label_mids=class_mids(data_args),
        text_encoder=model_args.text_encoder,
        text_encoder_revision=model_args.text_encoder_revision,
        text_pooling=model_args.text_pooling,
        description_style=model_args.description_style,
        projection_dim=model_args.projection_dim,
        **({"frontend": frontend_preset(model_args.frontend)} if model_args.frontend else {}),
        **{name: getattr(model_args, name) for name in (*OBJECTIVE_FIELDS, "center_label_text")},
    )
