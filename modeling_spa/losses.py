"""Training objectives: ontology-aware BCE (OBCE, Liu et al. 2023) and the SPA alignment loss (Eq. 4).

Both take logits/embeddings in any floating dtype and compute in float32, so bfloat16 autocast training
gets stable losses while gradients flow back in the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()  # r is a weight, not a function to differentiate (the reference computes it in numpy)
def ontology_loss_weight(labels: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Per-(clip, class) BCE weights r of OBCE, normalised to mean 1 over the batch.

    With G = D / Dmax, m[i, j] = min over labels k != j of clip i of t[i, k] * G[j, k] (0 if none), i.e. the
    distance of class j to the clip's nearest other label; r = m / max_j m, set to 1 on positive classes.
    Soft labels scale the distances, as in the reference. A clip without labels is maximally far from
    every class (r = 1 everywhere), the convention OmAP uses, instead of the reference's 0/0.

    The minimum runs over all (clip, class, class) triples at once: static shapes and no host read, so a compiled
    training step neither synchronises nor recompiles (gathering each clip's labels needs the largest label count,
    read on the host). Eagerly that is one (B, C, C) float32 temporary, 136 MiB at B = 128 and C = 527 (no autograd
    keeps it); inductor fuses it into the reduction. See README "Benchmarks" for the figures behind this choice.
    """
    t = labels.float()
    g = distances.to(device=t.device, dtype=torch.float32)
    g = g / g.max().clamp_min(1)  # an all-zero matrix (a model built without labels' distances) stays finite
    # A zero, in t (not a label) or in G (k == j), is excluded from the minimum: as +inf, products stay +inf.
    nearest = (torch.where(t > 0, t, torch.inf)[:, None, :] * torch.where(g > 0, g, torch.inf)).amin(dim=-1)
    nearest = torch.where(torch.isinf(nearest), 0.0, nearest)
    row_max = nearest.amax(dim=1, keepdim=True)
    weight = torch.where(row_max > 0, nearest / row_max.clamp_min(torch.finfo(torch.float32).tiny), 1.0)
    weight = torch.where(t > 0, 1.0, weight)
    return weight / weight.mean()


def obce_loss(
    logits: torch.Tensor, labels: torch.Tensor, distances: torch.Tensor, return_parts: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_BCE + L_OBCE) / 2 on logits: 0.5 * (mean(BCE) + mean(r * BCE)), `r` from `ontology_loss_weight`.

    With `return_parts`, returns (that loss, L_BCE, L_OBCE).
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    plain, weighted = bce.mean(), (ontology_loss_weight(labels, distances) * bce).mean()
    loss = 0.5 * (plain + weighted)
    return (loss, plain, weighted) if return_parts else loss


def label_similarity(audio_embeds: torch.Tensor, label_text_embeds: torch.Tensor) -> torch.Tensor:
    """S = normalize(E_a) @ normalize(E_t)^T: cosine of every clip (B, D) with every label text (C, D)."""
    return F.normalize(audio_embeds.float(), dim=-1) @ F.normalize(label_text_embeds.float(), dim=-1).T


def spa_alignment_loss(
    audio_embeds: torch.Tensor, label_text_embeds: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """L_SPA = 1 - (1/N) sum_i cos(E_a, E_t_i) over a clip's N labels, averaged over clips with a label.

    `labels` (B, C) may be soft: the cosines are averaged with the label values as weights. Clips without
    any label contribute nothing; a batch without any gives 0 (still connected to the graph).
    """
    y = labels.float()
    mass = y.sum(dim=1)
    has_label = mass > 0
    aligned = (y * label_similarity(audio_embeds, label_text_embeds)).sum(dim=1) / mass.clamp_min(1e-12)
    per_clip = torch.where(has_label, 1.0 - aligned, 0.0)
    return per_clip.sum() / has_label.sum().clamp_min(1)
