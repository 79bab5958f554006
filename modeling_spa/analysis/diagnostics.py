"""Label-space collapse diagnostics: does the SPA head still carry the label texts' semantics?

With a learnable p_t, Eq. 4 (1 - mean cos(E_a, E_t) over a clip's labels) only pulls, and the cheapest way to satisfy
it is to map every label text to nearly one direction (DESIGN.md §7). These figures show whether that happened. From
the model alone (its buffers: no text encoder, no data), so they can be recomputed from any saved checkpoint:

- `text_cos_mean`, `text_cos_min`: mean and minimum cosine over the C(C - 1)/2 pairs of distinct labels of T̂, the
  text encoder's label embeddings (before centring): the geometry SPA starts from.
- `label_cos_mean`, `label_cos_min`: the same for E_t = p_t(T̂), the label embeddings L_SPA aligns to. A mean near 1
  is a collapsed label space.
- `text_ontology_spearman`, `label_ontology_spearman`: Spearman's rank correlation, over the same pairs, between the
  cosine distance 1 - cos and the ontology hop distance (the model's `label_distances` buffer), for T̂ and for E_t:
  positive when labels near each other in the ontology are near each other in the embedding. NaN when either is
  constant (e.g. all labels identical).

From the model and the audio embeddings E_a of an evaluation split with its labels (`recipes/train.py` gathers them in
its evaluation pass; the CLI below runs the model over a split):

- `audio_positive_cos`, `audio_negative_cos`: mean cosine between E_a and E_t over all (clip, positive label) pairs
  and over all (clip, negative label) pairs (soft labels weight the pairs); `audio_cos_margin` = their difference.
- `audio_label_auc`: the mean over clips with a positive and a negative label of the probability that the clip's
  cosine to a positive label exceeds its cosine to a negative one: the ranking the margin's scale hides.

    python -m modeling_spa.analysis.diagnostics MODEL_DIR [--dataset DATA --split test]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from ..losses import label_similarity, pairwise_cosine

LABEL_KEYS = ("text_cos_mean", "text_cos_min", "text_ontology_spearman", "label_cos_mean", "label_cos_min",
              "label_ontology_spearman")  # fmt: skip
AUDIO_KEYS = ("audio_positive_cos", "audio_negative_cos", "audio_cos_margin", "audio_label_auc")


def _upper_pairs(matrix: torch.Tensor) -> torch.Tensor:
    """The entries above the diagonal of a (C, C) matrix: one per pair of distinct labels."""
    rows, cols = torch.triu_indices(*matrix.shape, offset=1, device=matrix.device)
    return matrix[rows, cols]


def cosine_summary(embeds: torch.Tensor) -> tuple[float, float]:
    """Mean and minimum pairwise cosine of the rows of `embeds` (C, D) over distinct pairs; NaN for C < 2."""
    pairs = _upper_pairs(pairwise_cosine(embeds.detach()))
    if pairs.numel() == 0:
        return math.nan, math.nan
    return pairs.mean().item(), pairs.min().item()


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their positions (as Spearman's rho needs)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties: Pearson's r of the ranks; NaN if either is constant."""
    rx, ry = average_ranks(np.asarray(x, np.float64)), average_ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / scale) if scale > 0 else math.nan


def ontology_rank_correlation(embeds: torch.Tensor, distances: torch.Tensor) -> float:
    """Spearman between the cosine distance 1 - cos of the rows of `embeds` (C, D) and `distances` (C, C), over the
    pairs of distinct labels."""
    cosine_distance = _upper_pairs(1.0 - pairwise_cosine(embeds.detach())).cpu().numpy()
    return spearman(cosine_distance, _upper_pairs(distances.to(embeds.device)).cpu().numpy())


@torch.no_grad()
def label_space_diagnostics(model) -> dict[str, float]:
    """The `LABEL_KEYS` figures of an `SPAForAudioClassification` (see the module docstring), from its buffers."""
    text, label_embeds, distances = model.label_text_embeds, model.label_embeds(), model.label_distances
    text_mean, text_min = cosine_summary(text)
    label_mean, label_min = cosine_summary(label_embeds)
    return {
        "text_cos_mean": text_mean,
        "text_cos_min": text_min,
        "text_ontology_spearman": ontology_rank_correlation(text, distances),
        "label_cos_mean": label_mean,
        "label_cos_min": label_min,
        "label_ontology_spearman": ontology_rank_correlation(label_embeds, distances),
    }


def label_auc(similarity: torch.Tensor, positive: torch.Tensor) -> float:
    """Mean over clips with both kinds of label of the AUC of `similarity` (B, C) separating `positive` (B, C, bool)
    labels from the others (Mann-Whitney from the ranks within each clip; exact float ties are broken by order)."""
    ranks = similarity.argsort(dim=1).argsort(dim=1).double() + 1
    n_pos = positive.sum(dim=1).double()
    n_neg = positive.shape[1] - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return math.nan
    auc = ((ranks * positive).sum(dim=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp_min(1)
    return auc[both].mean().item()


@torch.no_grad()
def alignment_diagnostics(audio_embeds: torch.Tensor, label_embeds: torch.Tensor, labels: torch.Tensor) -> dict:
    """The `AUDIO_KEYS` figures (see the module docstring) of E_a (B, D) against E_t (C, D) for `labels` (B, C)."""
    similarity = label_similarity(audio_embeds, label_embeds.to(audio_embeds.device)).double()
    y = labels.to(similarity.device).double()
    positive = (y * similarity).sum() / y.sum()
    negative = ((1 - y) * similarity).sum() / (1 - y).sum()
    return {
        "audio_positive_cos": positive.item(),
        "audio_negative_cos": negative.item(),
        "audio_cos_margin": (positive - negative).item(),
        "audio_label_auc": label_auc(similarity, y > 0.5),
    }


@torch.no_grad()
def collapse_diagnostics(
    model, audio_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None
) -> dict[str, float]:
    """Every figure of the module docstring: the label-space ones, and with E_a and labels the alignment ones."""
    result = label_space_diagnostics(model)
    if audio_embeds is not None and labels is not None:
        result |= alignment_diagnostics(audio_embeds, model.label_embeds(), labels)
    return result


@torch.no_grad()
def embed_split(
    model, dataset, batch_size: int = 16, num_workers: int = 0, label_mids: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_a and the labels of every readable clip of an AudioSet-format split, whole clips as the model scores them
    at inference (longer ones window by window). The model must be in eval mode. The labels are multi-hot over
    `label_mids` (default: the model's classes; others, e.g. classes held out of training, for zero-shot scores)."""
    from torch.utils.data import DataLoader

    from ..data import AudioSetCollator

    collator = AudioSetCollator(
        sampling_rate=model.config.frontend["sampling_rate"],
        label_mids=model.config.label_mids if label_mids is None else label_mids,
        max_length_s=0.0,  # pad to the longest clip of each batch; the front-end masks the padding
        min_samples=model.spa.frontend.min_samples,
    )
    device = next(model.parameters()).device
    embeds, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=num_workers):
        output = model(batch["input_values"].to(device), batch["attention_mask"].to(device))
        embeds.append(output.audio_embeds.float().cpu()[batch["valid"]])
        labels.append(batch["labels"][batch["valid"]])
    return torch.cat(embeds), torch.cat(labels)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Label-space collapse diagnostics of an SPA checkpoint (JSON).")
    parser.add_argument("model", help="a saved SPA checkpoint folder or Hub id")
    parser.add_argument("--dataset", help="an AudioSet-format build: adds the E_a figures on --split")
    parser.add_argument("--dataset-config", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from ..data import load_audioset
    from ..modeling_spa import SPAForAudioClassification

    model = SPAForAudioClassification.from_pretrained(args.model).to(args.device).eval()
    audio_embeds = labels = None
    if args.dataset:
        split = load_audioset(args.dataset, args.split, args.dataset_config)
        audio_embeds, labels = embed_split(model, split, args.batch_size, args.num_workers)
    result = collapse_diagnostics(model, audio_embeds, labels)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
