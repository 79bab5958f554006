import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modeling_spa.losses import (
    _GeometryLoss,
    _Gram,
    label_geometry_loss,
    label_geometry_target,
    label_similarity,
    label_uniformity_loss,
    obce_loss,
    ontology_loss_weight,
    pairwise_cosine,
    spa_alignment_loss,
    spa_contrastive_loss,
)


def loop_obce(logits, labels, distances):
    """OBCE written out clip by clip, class by class (DESIGN.md section 3), for comparison."""
    b, c = labels.shape
    g = distances.double() / distances.max()
    weight = torch.zeros(b, c, dtype=torch.float64)
    for i in range(b):
        m = [
            min((labels[i, k].item() * g[j, k].item() for k in range(c) if labels[i, k] != 0 and k != j), default=0.0)
            for j in range(c)
        ]
        top = max(m)
        for j in range(c):
            weight[i, j] = 1.0 if labels[i, j] > 0 else (m[j] / top if top > 0 else 1.0)
    weight = weight / weight.mean()
    total, plain = 0.0, 0.0
    for i in range(b):
        for j in range(c):
            p = 1 / (1 + math.exp(-logits[i, j].item()))
            t = labels[i, j].item()
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            total += weight[i, j].item() * bce
            plain += bce
    return 0.5 * (total + plain) / (b * c)


def loop_spa(audio, text, labels):
    losses = []
    for i in range(labels.shape[0]):
        if labels[i].sum() == 0:
            continue
        cos = [torch.nn.functional.cosine_similarity(audio[i], text[j], dim=0).item() for j in range(labels.shape[1])]
        losses.append(1 - sum(labels[i, j].item() * cos[j] for j in range(labels.shape[1])) / labels[i].sum().item())
    return sum(losses) / len(losses) if losses else 0.0


@pytest.fixture
def small_problem():
    torch.manual_seed(0)
    points = torch.randint(0, 5, (7, 2))
    distances = (points[:, None] - points[None]).abs().sum(-1).clamp_min(1)
    distances.fill_diagonal_(0)
    labels = (torch.rand(6, 7) < 0.3).float()
    labels[0] = 0  # no label at all
    labels[1] = 0
    labels[1, 2] = 1  # a single label
    logits = torch.randn(6, 7) * 3
    return logits, labels, distances


def test_obce_matches_the_loop(small_problem):
    logits, labels, distances = small_problem
    assert obce_loss(logits, labels, distances).item() == pytest.approx(loop_obce(logits, labels, distances), rel=1e-5)


def test_obce_with_soft_labels_matches_the_loop(small_problem):
    logits, labels, distances = small_problem
    soft = labels * torch.rand_like(labels).clamp_min(0.2)
    assert obce_loss(logits, soft, distances).item() == pytest.approx(loop_obce(logits, soft, distances), rel=1e-5)


def test_obce_weights_by_hand():
    distances = torch.tensor([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]])
    labels = torch.tensor([[1.0, 0, 0, 0]])
    # m = G[j, 0] = (., 1, 2, 3)/3 -> r = (1, 1/3, 2/3, 1) before the batch mean (= 0.75) normalisation.
    expected = torch.tensor([[1, 1 / 3, 2 / 3, 1]]) / 0.75
    torch.testing.assert_close(ontology_loss_weight(labels, distances), expected)


def test_obce_is_finite_without_any_label(small_problem):
    logits, _, distances = small_problem
    loss = obce_loss(logits, torch.zeros_like(logits), distances)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(bce.item(), rel=1e-6)


def test_obce_parts_and_zero_distances(small_problem):
    logits, labels, distances = small_problem
    loss, plain, weighted = obce_loss(logits, labels, distances, return_parts=True)
    torch.testing.assert_close(loss, 0.5 * (plain + weighted))
    torch.testing.assert_close(plain, nn.functional.binary_cross_entropy_with_logits(logits, labels))
    assert torch.isfinite(obce_loss(logits, labels, torch.zeros_like(distances)))


def test_obce_is_stable_for_large_logits(small_problem):
    _, labels, distances = small_problem
    logits = torch.full(labels.shape, 200.0)
    assert torch.isfinite(obce_loss(logits, labels, distances))


def test_spa_matches_the_loop(small_problem):
    _, labels, _ = small_problem
    audio, text = torch.randn(6, 16), torch.randn(7, 16)
    assert spa_alignment_loss(audio, text, labels).item() == pytest.approx(loop_spa(audio, text, labels), rel=1e-5)
    soft = labels * 0.7
    assert spa_alignment_loss(audio, text, soft).item() == pytest.approx(loop_spa(audio, text, soft), rel=1e-5)


def test_spa_is_zero_and_connected_without_labels():
    audio = torch.randn(3, 8, requires_grad=True)
    loss = spa_alignment_loss(audio, torch.randn(5, 8), torch.zeros(3, 5))
    loss.backward()
    assert loss.item() == 0.0 and audio.grad is not None and torch.isfinite(audio.grad).all()


def test_gradients_flow_to_both_projections(small_problem):
    logits, labels, distances = small_problem
    audio_proj, text_proj, classifier = nn.Linear(12, 8), nn.Linear(10, 8), nn.Linear(8, 7)
    pooled, text_features = torch.randn(6, 12), torch.randn(7, 10)
    audio_embeds = audio_proj(pooled)
    loss = obce_loss(classifier(audio_embeds), labels, distances) + 0.5 * spa_alignment_loss(
        audio_embeds, text_proj(text_features), labels
    )
    loss.backward()
    for module in (audio_proj, text_proj, classifier):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_agnostic(small_problem, dtype):
    logits, labels, distances = small_problem
    logits = logits.to(dtype).requires_grad_()
    audio, text = torch.randn(6, 16, dtype=dtype, requires_grad=True), torch.randn(7, 16, dtype=dtype)
    obce = obce_loss(logits, labels.to(dtype), distances)
    spa = spa_alignment_loss(audio, text, labels.to(dtype))
    (obce + spa).backward()
    assert obce.dtype == torch.float32 and logits.grad.dtype == dtype and audio.grad.dtype == dtype
    reference = obce_loss(logits.detach().float(), labels, distances)
    assert obce.item() == pytest.approx(reference.item(), rel=1e-6)  # computed in float32 from the same values


def test_obce_weights_on_audioset_with_mixed_labels_match_a_per_clip_reference(ontology):
    """The 527 AudioSet classes and mixup's soft labels: the dense (B, C, C) minimum equals gathering each clip's
    labels (the implementation before it, which read the largest label count on the host)."""
    distances = torch.tensor(ontology.distances)
    g = distances.float() / distances.max()
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(8, 527, generator=generator) < 3 / 527).float()
    labels[0] = 0  # no label
    labels[1, :40] = 1  # many labels
    lam = torch.rand(8, 1, generator=generator).clamp_min(0.5)
    soft = lam * labels + (1 - lam) * labels[torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])]
    for t in (labels, soft):
        nearest = torch.zeros(8, 527)
        for i in range(8):
            k = t[i].nonzero()[:, 0]
            scaled = t[i, k] * g[:, k]  # (C, labels of clip i)
            if len(k):
                nearest[i] = torch.where(scaled == 0, torch.inf, scaled).amin(dim=1).nan_to_num(posinf=0.0)
        row_max = nearest.amax(dim=1, keepdim=True)
        weight = torch.where(row_max > 0, nearest / row_max.clamp_min(torch.finfo(torch.float32).tiny), 1.0)
        weight = torch.where(t > 0, 1.0, weight)
        assert torch.equal(ontology_loss_weight(t, distances), weight / weight.mean())


# Three labels on the unit circle: east, north, west. A clip pointing east has cosines (1, 0, -1) to them.
COMPASS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def test_contrastive_loss_by_hand():
    audio = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # east, north, and a clip without labels
    labels = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 0]])  # the second: soft (mixup), half east half north
    # τ = 0.5: logits S / τ = (2, 0, -2) for the first clip, (0, 2, 0) for the second.
    first = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    second = -(0.5 * math.log(1 / (2 + math.exp(2))) + 0.5 * math.log(math.exp(2) / (2 + math.exp(2))))
    loss = spa_contrastive_loss(audio, COMPASS, labels, temperature=0.5)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)  # the clip without labels is left out


def test_contrastive_loss_is_worst_on_a_collapsed_label_space():
    # All labels in one direction: every logit equal, the loss is log C whatever the clip; spread labels do better.
    audio, labels = torch.randn(4, 2), torch.eye(3)[[0, 1, 2, 0]]
    collapsed = spa_contrastive_loss(audio, torch.ones(3, 2), labels, temperature=0.1)
    assert collapsed.item() == pytest.approx(math.log(3), rel=1e-6)
    aligned = spa_contrastive_loss(COMPASS[[0, 1, 2, 0]], COMPASS, labels, temperature=0.1)
    assert aligned.item() < 0.01
    # Eq. 4 says the opposite: it is 0 for any clip pointing where the collapsed labels point.
    assert spa_alignment_loss(torch.ones(4, 2), torch.ones(3, 2), labels).item() == pytest.approx(0.0, abs=1e-6)


def test_contrastive_loss_without_labels_is_zero_and_connected():
    audio = torch.randn(3, 2, requires_grad=True)
    loss = spa_contrastive_loss(audio, COMPASS, torch.zeros(3, 3), temperature=0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(audio.grad).all()


def test_uniformity_by_hand():
    # Pairs (east, north), (north, west): cos 0; (east, west): cos -1. t = 2: exp(-4 (1 - cos)).
    expected = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert label_uniformity_loss(COMPASS).item() == pytest.approx(expected, rel=1e-6)
    assert label_uniformity_loss(torch.ones(4, 3)).item() == pytest.approx(0.0, abs=1e-6)  # all equal: its maximum
    # Its minimum, -2t·C/(C - 1), is a regular simplex: three directions 120° apart.
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    simplex = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert label_uniformity_loss(simplex).item() == pytest.approx(-4 * 3 / 2, rel=1e-5)
    assert label_uniformity_loss(simplex * 7).item() == pytest.approx(-6, rel=1e-5)  # on the sphere: scale-free
    single = torch.randn(1, 3, requires_grad=True)
    label_uniformity_loss(single).backward()
    assert single.grad is not None


def test_geometry_by_hand():
    embeds, reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # cos 0 where the reference has cos 1/sqrt(2): (1/sqrt(2))^2 = 0.5 for both ordered pairs.
    assert label_geometry_loss(embeds, reference).item() == pytest.approx(0.5, rel=1e-6)
    rotated = reference[:, :2] @ torch.tensor([[0.6, -0.8], [0.8, 0.6]]) * 3  # rotated and scaled: the same shape
    assert label_geometry_loss(rotated, reference).item() == pytest.approx(0.0, abs=1e-6)
    reference.requires_grad_(True)
    weights = torch.randn(2, 2, requires_grad=True)
    label_geometry_loss(embeds @ weights, reference).backward()
    assert weights.grad.abs().sum() > 0 and reference.grad is None  # the reference is a target


def test_pairwise_cosine_is_label_similarity_with_its_gradient():
    """One normalisation and a one-matmul backward: the same cosines, the same gradient (to rounding) as
    label_similarity(e, e), in float32 and under bf16 autocast; gradcheck of the product itself in float64."""
    embeds, weights = torch.randn(9, 4, requires_grad=True), torch.randn(9, 9)
    for autocast, tolerance in ((False, 1e-6), (True, 2e-2)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ours, reference = pairwise_cosine(embeds), label_similarity(embeds, embeds)
        assert torch.equal(ours, reference)
        (grad,) = torch.autograd.grad((ours.float() * weights).sum(), embeds)
        (expected,) = torch.autograd.grad((reference.float() * weights).sum(), embeds)
        torch.testing.assert_close(grad, expected, rtol=tolerance, atol=tolerance)
    assert torch.autograd.gradcheck(_Gram.apply, torch.randn(5, 3, dtype=torch.float64, requires_grad=True))


def test_geometry_from_a_precomputed_target_is_the_same_loss_and_gradient():
    """A model computes the target once (`label_geometry_target`); the loss and its gradient are the reference's."""
    reference = torch.randn(7, 5)
    grads = []
    for kwargs in ({"reference": reference}, {"target": label_geometry_target(reference)}):
        embeds = torch.randn(7, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        loss = label_geometry_loss(embeds, **kwargs)
        loss.backward()
        grads.append((loss.detach(), embeds.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    for wrong in ({}, {"reference": reference, "target": label_geometry_target(reference)}):
        with pytest.raises(ValueError, match="one of them"):
            label_geometry_loss(torch.randn(7, 3), **wrong)


def geometry_by_autograd(embeds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The geometry term written plainly, for autograd to differentiate."""
    unit = F.normalize(embeds, dim=-1)
    off_diagonal = ~torch.eye(len(embeds), dtype=torch.bool)
    return ((unit @ unit.T - target) ** 2)[off_diagonal].sum() / (len(embeds) * (len(embeds) - 1))


def test_fused_geometry_loss_is_the_formula_with_its_gradient():
    """The fused term (one matmul each way) against the formula through autograd: gradcheck in float64, equal values
    and gradients in float32 and, to bfloat16 rounding, under autocast; a single label gives 0 and a zero gradient."""
    target = label_geometry_target(torch.randn(11, 6, dtype=torch.float64))
    unit = F.normalize(torch.randn(11, 4, dtype=torch.float64), dim=-1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: _GeometryLoss.apply(x, target), unit)
    embeds = torch.randn(527, 64, requires_grad=True)
    target = label_geometry_target(torch.randn(527, 96))
    # float32: 277k squares summed in another order (1.6e-6 apart with one thread)
    for autocast, tolerance in ((False, 1e-5), (True, 2e-2)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ours, expected = label_geometry_loss(embeds, target=target), geometry_by_autograd(embeds, target)
        (grad,) = torch.autograd.grad(ours, embeds)
        (expected_grad,) = torch.autograd.grad(expected, embeds)
        torch.testing.assert_close(ours, expected.float(), rtol=tolerance, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance * expected_grad.abs().max())
    single = torch.randn(1, 3, requires_grad=True)
    loss = label_geometry_loss(single, target=torch.ones(1, 1))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(single.grad, torch.zeros(1, 3))


def mean_pairwise_cosine(embeds: torch.Tensor) -> float:
    cosine = F.normalize(embeds, dim=1) @ F.normalize(embeds, dim=1).T
    return cosine[~torch.eye(len(embeds), dtype=torch.bool)].mean().item()


def test_label_space_terms_pull_collapsed_labels_apart():
    # Nearly collapsed labels (mean cosine 0.99), moved by gradient descent on each term alone, spread out.
    base = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [1.0, -0.1, 0.0], [1.0, 0.0, -0.1]])
    reference = torch.eye(4)  # orthogonal texts (in a space of their own size): mean cosine 0
    for loss_fn in (label_uniformity_loss, lambda e: label_geometry_loss(e, reference)):
        embeds = base.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([embeds], lr=0.5)
        for _ in range(50):
            optimizer.zero_grad()
            loss_fn(embeds).backward()
            optimizer.step()
        assert mean_pairwise_cosine(base) > 0.98 and mean_pairwise_cosine(embeds.detach()) < 0.5


@pytest.mark.parametrize("name", ["contrastive", "uniformity", "geometry"])
def test_new_terms_compile_without_graph_breaks(name):
    """fullgraph=True fails on any host read (.item(), a branch on a value): the terms stay in a compiled step."""
    torch._dynamo.reset()
    audio, text, labels = torch.randn(4, 8), torch.randn(5, 8), (torch.rand(4, 5) < 0.4).float() * 0.7
    fn = {
        "contrastive": lambda a, t, y: spa_contrastive_loss(a, t, y, temperature=0.1),
        "uniformity": lambda a, t, y: label_uniformity_loss(t),
        "geometry": lambda a, t, y: label_geometry_loss(t, t.detach() + 0.1),
    }[name]
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(audio, text, labels), fn(audio, text, labels))
