"""AST checkpoints (e.g. `MIT/ast-finetuned-audioset-10-10-0.4593`, a Hub id or a folder) -> `ASTBackbone`, through
transformers' `ASTForAudioClassification`; an AudioSet classifier (527 labels) is kept as the original head."""

from __future__ import annotations

from torch import nn
from transformers import ASTForAudioClassification

from ..backbone_ast import AUDIOSET_CLASSES, ASTBackbone


def load(name_or_path: str, **kwargs) -> ASTBackbone:
    """A pretrained AST checkpoint (a Hub id or a folder); an AudioSet classifier (527 labels) is kept as the
    original head, any other head is dropped."""
    try:
        pretrained = ASTForAudioClassification.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise OSError(
            f"AST checkpoint {name_or_path!r}: neither a local folder with an AST model nor loadable from the Hub "
            f"({str(err).splitlines()[0]})"
        ) from err
    backbone = ASTBackbone.__new__(ASTBackbone)
    nn.Module.__init__(backbone)
    backbone.ast = pretrained.audio_spectrogram_transformer
    if pretrained.config.num_labels == AUDIOSET_CLASSES:
        backbone.classifier = pretrained.classifier
        backbone.audioset_head_modules = ("classifier",)
    return backbone
