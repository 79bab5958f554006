"""Audio Spectrogram Transformer (Gong et al., 2021) as an SPA backbone, through transformers' `ASTModel`.

`MIT/ast-finetuned-audioset-10-10-0.4593` loads into it (see `ASTBackbone.from_pretrained_ast`); its pooled
output is the mean of the CLS and distillation tokens, 768-dim. A config with 527 labels (an AudioSet checkpoint's)
keeps AST's own classifier (`ASTMLPHead`) as the original AudioSet head, off the SPA path (`audioset_scores`).
LoRA targets (transformers 5 names): `q_proj`, `v_proj`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ASTConfig, ASTModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import ASTMLPHead

AUDIOSET_CLASSES = 527


class ASTBackbone(nn.Module):
    """(B, frames, mels) log-mel -> (B, hidden_size) pooled AST embedding. Frames must equal `max_length`.

    `hidden_states` are the token sequences (B, 2 + patches, hidden_size) after the embeddings and after each layer,
    `attentions` each layer's attention weights (with `attn_implementation="eager"`), both computed by `ASTModel`.
    """

    # Read by the SPA model's post_init, which gathers its children's: a device map must not split these.
    _no_split_modules = list(ASTModel._no_split_modules)

    def __init__(self, config: ASTConfig):
        super().__init__()
        self.ast = ASTModel(config)
        if config.num_labels == AUDIOSET_CLASSES:
            self.classifier = ASTMLPHead(config)
            self.audioset_head_modules = ("classifier",)

    @property
    def config(self) -> ASTConfig:
        return self.ast.config

    def forward(
        self,
        features: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        # AST attends over patches of a fixed-size spectrogram; padding frames were filled by the front-end the
        # way AST was trained (zeros before normalisation), so the mask is not needed here.
        return self.ast(
            input_values=features, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )

    def audioset_scores(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The AudioSet checkpoint's own predictions: (B, 527) sigmoid scores of its classifier."""
        if not hasattr(self, "classifier"):
            raise ValueError("This AST backbone has no AudioSet head (its config does not have 527 labels).")
        return torch.sigmoid(self.classifier(self(features).pooler_output))
