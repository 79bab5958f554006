"""transformers' speech encoders (wav2vec2, HuBERT, WavLM, Data2Vec-Audio, SEW, SEW-D, UniSpeech, UniSpeech-SAT,
wav2vec2-Conformer, wav2vec2-BERT, Whisper) by Hub id or folder -> `HubBackbone`, with the front-end that reproduces
the checkpoint's own feature extractor.

The weights load through transformers' `AutoModelForAudioClassification`, which takes every checkpoint layout of these
families (a bare encoder, pre-training, CTC, sequence classification, Whisper's encoder-decoder) and keeps the encoder
(Whisper's alone); its classification head, if any, is dropped, except learned layer weights (`use_weighted_layer_sum`),
which the backbone's pooling takes over. The front-end's settings come from the checkpoint's
`preprocessor_config.json` where it has one (`do_normalize` differs between checkpoints of one family, e.g.
wavlm-base-plus normalises nothing), else from the family's defaults.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)
from transformers.utils import logging

from ..backbone_hub import HubBackbone, check_family
from ..backbones import backbone_spec
from ..frontends import frontend_kind
from .checkpoints import CheckpointError

logger = logging.get_logger(__name__)

# The extractor each front-end kind reproduces.
EXTRACTORS = {
    "waveform": Wav2Vec2FeatureExtractor,
    "whisper": WhisperFeatureExtractor,
    "stacked_fbank": SeamlessM4TFeatureExtractor,
}


def load(source: str | os.PathLike) -> HubBackbone:
    """A `HubBackbone` with the weights of a Hub id or folder, and its front-end settings (`frontend_settings`)."""
    source = str(source)
    try:
        check_family(_config(source))
    except ValueError as err:  # a model of another family: said as a checkpoint error, as spa-convert reports them
        raise CheckpointError(f"{source}: {err}") from err
    model, info = AutoModelForAudioClassification.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    encoder = model.encoder if model.config.model_type == "whisper" else model.base_model
    prefix = "encoder." if model.config.model_type == "whisper" else f"{model.base_model_prefix}."
    # The classification head is new where the checkpoint has none; the encoder must be there whole (SpecAugment's
    # mask embedding is not saved by every fine-tuning script, and only trains with masking).
    missing = [key for key in info["missing_keys"] if key.startswith(prefix) and not key.endswith("masked_spec_embed")]
    if missing:
        raise CheckpointError(f"{source}: not a whole {model.config.model_type} encoder; missing {len(missing)} "
                              f"weights, e.g. {sorted(missing)[:4]}.")  # fmt: skip
    backbone = HubBackbone(encoder.config, encoder=encoder)
    if hasattr(backbone, "layer_weights") and hasattr(model, "layer_weights"):  # a fine-tuned SUPERB-style head
        backbone.layer_weights.data.copy_(model.layer_weights.data)
    backbone.frontend_settings = frontend_of(source, encoder.config)
    return backbone.eval()


def _config(source: str):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise FileNotFoundError(
            f"{source!r} is no transformers model that could be loaded from the Hugging Face Hub or a folder "
            f"({reason}). Offline (HF_HUB_OFFLINE), a Hub model must already be in the Hugging Face cache: "
            f"download it once online, e.g. `hf download {source}`, or pass a local folder."
        ) from err


def frontend_of(source: str, config) -> dict:
    """The family's front-end for `config`, with the settings of the checkpoint's own feature extractor."""
    settings = backbone_spec("hub").frontend_settings(config)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(source)
    except OSError:
        logger.warning(f"{source} has no preprocessor_config.json: using the {config.model_type} family's defaults.")
        return settings
    kind = frontend_kind(settings)
    if not isinstance(extractor, EXTRACTORS[kind]):
        raise CheckpointError(f"{source}: its feature extractor is a {type(extractor).__name__}, but a {kind} "
                              f"front-end reproduces {EXTRACTORS[kind].__name__}.")  # fmt: skip
    settings["sampling_rate"] = extractor.sampling_rate
    if kind == "waveform":
        settings["do_normalize"] = bool(extractor.do_normalize)
    elif kind == "whisper":
        _require_equal(source, extractor, n_fft=400, hop_length=settings["hop_length"], feature_size=settings["n_mels"],
                       n_samples=settings["max_samples"])  # fmt: skip
    else:
        _require_equal(source, extractor, num_mel_bins=settings["n_mels"], stride=settings["stride"])
    return settings


def _require_equal(source: str, extractor, **expected) -> None:
    """Raise if the extractor's settings differ from what the family's front-end computes."""
    differ = {name: getattr(extractor, name) for name, value in expected.items() if getattr(extractor, name) != value}
    if differ:
        raise CheckpointError(f"{source}: its {type(extractor).__name__} has {differ}, where the model and SPA's "
                              f"front-end need {({name: expected[name] for name in differ})}.")  # fmt: skip
