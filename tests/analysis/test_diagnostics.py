"""The collapse diagnostics by hand on tiny cases, and from a saved checkpoint through the module's CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from tiny_models import tiny_model

from modeling_spa.analysis.diagnostics import (
    AUDIO_KEYS,
    LABEL_KEYS,
    alignment_diagnostics,
    collapse_diagnostics,
    cosine_summary,
    label_space_diagnostics,
    ontology_rank_correlation,
    spearman,
)

COMPASS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # east, north, west


def directions(degrees: list[float]) -> torch.Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def test_cosine_summary_by_hand():
    assert cosine_summary(torch.ones(4, 3) * torch.tensor([[1.0], [2.0], [3.0], [4.0]])) == pytest.approx((1.0, 1.0))
    mean, lowest = cosine_summary(COMPASS)  # pairs: 0 (east, north), -1 (east, west), 0 (north, west)
    assert mean == pytest.approx(-1 / 3) and lowest == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in cosine_summary(torch.ones(1, 3)))  # no pair


def test_spearman_by_hand_and_against_scipy():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 35, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # A tie shares its ranks: x ranks (1.5, 1.5, 3, 4); centred (-1, -1, 0.5, 1.5) against (-1.5, -0.5, 0.5, 1.5):
    # 4.5 / sqrt(4.5 · 5).
    assert spearman(np.array([1, 1, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(4.5 / math.sqrt(22.5))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 50), rng.normal(size=50)  # many ties, as hop distances have
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman(np.ones(4), np.arange(4)))  # constant: undefined


def test_ontology_rank_correlation_on_a_constructed_case():
    # Angles 0°, 20°, -50°: pair angles 20° (0, 1), 50° (0, 2), 70° (1, 2), in the order of the hop distances 1, 2, 3.
    embeds = directions([0, 20, -50])
    hops = torch.tensor([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=torch.uint8)
    assert ontology_rank_correlation(embeds, hops) == pytest.approx(1.0)
    reversed_hops = torch.tensor([[0, 3, 2], [3, 0, 1], [2, 1, 0]], dtype=torch.uint8)
    assert ontology_rank_correlation(embeds, reversed_hops) == pytest.approx(-1.0)


def test_identical_label_embeddings_are_a_collapsed_label_space():
    model = tiny_model()
    with torch.no_grad():
        model.label_text_embeds.copy_(torch.arange(6.0).expand(5, 6) + 1)
    result = label_space_diagnostics(model)
    assert set(result) == set(LABEL_KEYS)
    assert result["text_cos_mean"] == pytest.approx(1.0) and result["label_cos_mean"] == pytest.approx(1.0)
    assert result["label_cos_min"] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(result["label_ontology_spearman"])  # every cosine distance equal: no ranking


def test_label_space_diagnostics_follow_the_models_projection():
    model = tiny_model(center_label_text=True)
    result = label_space_diagnostics(model)
    text, label_embeds = model.label_text_embeds, model.label_embeds()
    assert (result["text_cos_mean"], result["text_cos_min"]) == pytest.approx(cosine_summary(text))
    assert (result["label_cos_mean"], result["label_cos_min"]) == pytest.approx(cosine_summary(label_embeds))
    assert result["text_cos_mean"] > 0.8 > 0.2 > result["label_cos_mean"]  # the common component is gone
    upper = np.triu_indices(5, 1)
    distances = model.label_distances.numpy()[upper]
    cosine = torch.nn.functional.normalize(label_embeds.detach(), dim=1)
    expected = spearmanr(1 - (cosine @ cosine.T).numpy()[upper], distances).statistic
    assert result["label_ontology_spearman"] == pytest.approx(expected, abs=1e-6)


def test_alignment_diagnostics_by_hand():
    audio = torch.tensor([[1.0, 0.0], [0.1, 2.0]])  # east; nearly north
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    s1 = audio[1] / audio[1].norm()  # clip 1's cosines: (0.05, 0.999, -0.05)
    positive = (1.0 + s1[1].item() - s1[0].item()) / 3
    negative = (0.0 - 1.0 + s1[0].item()) / 3
    result = alignment_diagnostics(audio, COMPASS, labels)
    assert result["audio_positive_cos"] == pytest.approx(positive, rel=1e-6)
    assert result["audio_negative_cos"] == pytest.approx(negative, rel=1e-6)
    assert result["audio_cos_margin"] == pytest.approx(positive - negative, rel=1e-6)
    # Clip 0 ranks its positive above both negatives (AUC 1); clip 1 ranks north above east, west below it (0.5).
    assert result["audio_label_auc"] == pytest.approx(0.75)


def test_collapse_diagnostics_of_a_model_and_its_embeddings():
    model = tiny_model()
    embeds, labels = torch.randn(6, 8), (torch.rand(6, 5) < 0.4).float()
    labels[:, 0] = 1
    result = collapse_diagnostics(model, embeds, labels)
    assert set(result) == set(LABEL_KEYS + AUDIO_KEYS)
    assert result == pytest.approx(label_space_diagnostics(model) | alignment_diagnostics(embeds, model.label_embeds(),
                                                                                            labels))  # fmt: skip
    assert set(collapse_diagnostics(model)) == set(LABEL_KEYS)


def test_cli_recomputes_them_from_a_saved_checkpoint(tmp_path):
    model = tiny_model(spa_geometry_weight=1.0)
    model.save_pretrained(tmp_path / "ckpt")
    done = subprocess.run([sys.executable, "-m", "modeling_spa.analysis.diagnostics", str(tmp_path / "ckpt")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == pytest.approx(label_space_diagnostics(model))
