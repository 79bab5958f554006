"""Semantic Proximity Alignment (SPA) and ontology-aware mAP (OmAP) for AudioSet on the Hugging Face stack.

The model is the flat files of this folder (configuration_spa, modeling_spa, feature_extraction_spa and what they
import): the code a checkpoint carries. Every other concern is a room of its own (docs/architecture.md).

Importing the package registers SPA with the transformers Auto classes, so `AutoModel.from_pretrained(path)`
needs no `trust_remote_code`. `AutoModel` gives the full tagger (`SPAForAudioClassification`, with logits), as
published checkpoints promise; `SPAModel` gives audio embeddings only.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

from . import _deprecated
from .configuration_spa import SPAConfig
from .conversion.building import from_backbone
from .feature_extraction_spa import SPAFeatureExtractor
from .losses import obce_loss, spa_alignment_loss
from .metrics import average_precision, compute_omap
from .modeling_spa import SPAForAudioClassification, SPAModel, SPAOutput, SPAPreTrainedModel
from .taxonomy import AudioSetOntology

AutoConfig.register(SPAConfig.model_type, SPAConfig, exist_ok=True)
AutoModel.register(SPAConfig, SPAForAudioClassification, exist_ok=True)
AutoModelForAudioClassification.register(SPAConfig, SPAForAudioClassification, exist_ok=True)
AutoFeatureExtractor.register(SPAConfig, SPAFeatureExtractor, exist_ok=True)
# Saved extractors carry their code too (the model's classes do this in modeling_spa.py).
SPAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
# Building new models needs the taxonomy, a text encoder and the converters: the package's, not the checkpoint's.
SPAForAudioClassification.from_backbone = classmethod(from_backbone)
_deprecated.install()

__version__ = "0.1.0"
__all__ = [
    "AudioSetOntology",
    "SPAConfig",
    "SPAFeatureExtractor",
    "SPAForAudioClassification",
    "SPAModel",
    "SPAOutput",
    "SPAPreTrainedModel",
    "average_precision",
    "compute_omap",
    "obce_loss",
    "spa_alignment_loss",
]
