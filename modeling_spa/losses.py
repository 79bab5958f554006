"""Training objectives: ontology-aware BCE (OBCE, Liu et al. 2023), softmax cross-entropy for single-label data, the
SPA alignment loss (Eq. 4), and the terms that keep the label space from collapsing under it
(`SPAConfig.spa_objective`, `spa_uniformity_weight`, `spa_geometry_weight`).

All take logits/embeddings in any floating dtype and compute in float32, so bfloat16 autocast training
gets stable losses while gradients flow back in the input dtype. None reads a value back to the host or branches on
one: a compiled training step keeps one graph.
"""

from __future__ import annotations

import math

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


def single_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy for single-label clips (one class each), on logits: the mean over clips of
    -sum_c t_c log softmax(logits)_c, with each clip's labels t normalised to sum 1, so mixup's soft labels (a mix of
    two one-hots) work. A clip without labels (a placeholder) counts for nothing; no host read, no NaN."""
    t = labels.float()
    total = t.sum(dim=-1, keepdim=True)
    per_clip = -(t / total.clamp_min(torch.finfo(torch.float32).tiny) * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    has_label = (total[:, 0] > 0).float()
    return (per_clip * has_label).sum() / has_label.sum().clamp_min(1.0)


def label_similarity(audio_embeds: torch.Tensor, label_text_embeds: torch.Tensor) -> torch.Tensor:
    """S = normalize(E_a) @ normalize(E_t)^T: cosine of every clip (B, D) with every label text (C, D)."""
    return F.normalize(audio_embeds.float(), dim=-1) @ F.normalize(label_text_embeds.float(), dim=-1).T


class _Gram(torch.autograd.Function):
    """x @ x^T with the backward of one matmul, (g + g^T) @ x. Autograd's matmul backward does not know that both
    operands are x: it computes g @ x and g^T @ x and adds them, the same gradient for one more (C, C) x (C, D) matmul,
    at 527 labels a third of the geometry term's matmuls."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x @ x.mT  # under autocast, in its dtype: the gradient follows it below

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return ((grad + grad.mT) @ x.to(grad.dtype)).to(x.dtype)


def pairwise_cosine(embeds: torch.Tensor) -> torch.Tensor:
    """The (C, C) cosines between the rows of `embeds` (C, D): `label_similarity(embeds, embeds)`, with the rows
    normalised once and the symmetric product's cheaper backward (`_Gram`)."""
    return _Gram.apply(F.normalize(embeds.float(), dim=-1))


def _off_diagonal(num: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(num, dtype=torch.bool, device=device)


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


def spa_contrastive_loss(
    audio_embeds: torch.Tensor, label_text_embeds: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The clip-vs-all-labels form of the alignment: cross-entropy of softmax(S / τ) over the C labels against the
    clip's labels normalised to sum 1, averaged over clips with a label.

    S is `label_similarity`; `labels` (B, C) may be soft (mixup). Unlike Eq. 4, which only pulls E_a towards its
    labels, the softmax also pushes it away from the other labels, so mapping every label to one direction is the
    worst solution (all logits equal: loss log C), not the best. Clips without any label contribute nothing.
    """
    y = labels.float()
    mass = y.sum(dim=1)
    has_label = mass > 0
    log_p = torch.log_softmax(label_similarity(audio_embeds, label_text_embeds) / temperature, dim=1)
    per_clip = -(y * log_p).sum(dim=1) / mass.clamp_min(1e-12)
    return torch.where(has_label, per_clip, 0.0).sum() / has_label.sum().clamp_min(1)


def label_uniformity_loss(label_text_embeds: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity of the label embeddings on the sphere (Wang & Isola 2020), over the C(C - 1) ordered label pairs:
    log mean exp(-t |ê_c - ê_c'|²) with ê = E_t / |E_t|, i.e. log mean exp(-2t (1 - cos)).

    It falls as the labels spread out: 0 when all coincide, -2t·C/(C - 1) at its minimum (a regular simplex, when
    D ≥ C - 1). With fewer than two labels there is no pair: 0, still connected to the graph.
    """
    num = label_text_embeds.shape[0]
    cos = pairwise_cosine(label_text_embeds)
    if num < 2:
        return cos.sum() * 0.0
    logits = torch.where(_off_diagonal(num, cos.device), -2.0 * t * (1.0 - cos), -torch.inf)
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(num * (num - 1))


def label_geometry_target(reference: torch.Tensor) -> torch.Tensor:
    """The target of `label_geometry_loss`: the (C, C) pairwise cosines of the `reference` (C, V), a constant (no
    gradient). A model computes it once per state of its label text, not at every step: at C = 527, V = 768 it is
    a third of the term's cost."""
    return pairwise_cosine(reference.detach())


class _GeometryLoss(torch.autograd.Function):
    """sum over i != j of (x_i · x_j - target_ij)² / max(C(C - 1), 1) for unit rows x (C, D), fused: one matmul
    forward and one backward, whose gradient is 4 (G - T) x / (C(C - 1)) (G - T symmetric, its diagonal zeroed). The
    same formula through autograd takes six more passes over (C, C) temporaries; at 527 labels they were a fifth of
    the SPA terms' cost in a training step. The product runs in autocast's dtype, the difference in float32 or more."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        gram = x @ x.mT
        diff = gram.to(torch.promote_types(gram.dtype, torch.float32))  # in place unless autocast halved the product
        diff.sub_(target.to(diff.dtype)).diagonal().zero_()
        ctx.scale = 1.0 / max(x.shape[0] * (x.shape[0] - 1), 1)
        ctx.dtype = gram.dtype
        ctx.save_for_backward(x, diff)
        flat = diff.flatten()
        return torch.dot(flat, flat) * ctx.scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, diff = ctx.saved_tensors
        dx = (diff.to(ctx.dtype) @ x.to(ctx.dtype)).to(diff.dtype).mul_(grad * (4.0 * ctx.scale))
        return dx.to(x.dtype), None


def label_geometry_loss(
    label_text_embeds: torch.Tensor, reference: torch.Tensor | None = None, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared difference between the pairwise cosines of the label embeddings E_t (C, D) and those of a
    `reference` (C, V), over the C(C - 1) ordered pairs of distinct labels. Give the `reference`, or its cosines
    already computed as `target` (`label_geometry_target(reference)`), not both.

    With the text encoder's label embeddings as the reference, p_t may rotate and rescale the label space but must
    keep its shape: which labels are near which, as the text encoder (and through the descriptions, the ontology)
    says. The reference's cosines are a target, not a function to differentiate.
    """
    if (reference is None) == (target is None):
        raise ValueError("label_geometry_loss takes the reference embeddings or their target cosines: one of them.")
    if target is None:
        target = label_geometry_target(reference)
    return _GeometryLoss.apply(F.normalize(label_text_embeds.float(), dim=-1), target.detach().float())
