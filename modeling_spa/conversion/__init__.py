"""Conversion: the authors' AudioSet checkpoints of the paper's backbones into SPA models, and building new SPA
models (`from_backbone`)."""

from .building import from_backbone

__all__ = ["from_backbone"]
