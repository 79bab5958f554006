"""Semantic Proximity Alignment (SPA) and ontology-aware mAP (OmAP) for AudioSet on the Hugging Face stack."""

from .losses import obce_loss, spa_alignment_loss
from .metrics import compute_omap
from .ontology import AudioSetOntology

__version__ = "0.1.0"
__all__ = ["AudioSetOntology", "compute_omap", "obce_loss", "spa_alignment_loss"]
