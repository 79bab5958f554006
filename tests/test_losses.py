import math

import pytest
import torch
from torch import nn

from modeling_spa.losses import obce_loss, ontology_loss_weight, spa_alignment_loss


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
