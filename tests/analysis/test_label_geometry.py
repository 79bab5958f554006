"""Label-text geometry: kNN purity and the ontology rank correlation by hand on tiny cases, and
recipes/analyze_label_text.py end to end on a few labels with the packaged text encoder."""

import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from training_runs import load_recipe

from modeling_spa import SPAForAudioClassification
from modeling_spa.analysis.label_geometry import (
    chance_purity,
    knn_purity,
    label_geometry,
    nearest_neighbours,
    top_level_names,
)
from modeling_spa.frontend import frontend_preset
from modeling_spa.label_text import encode_label_descriptions

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def directions(degrees: list[float]) -> torch.Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def test_knn_purity_by_hand():
    # Two tight pairs, 90 degrees apart.
    embeds = directions([0, 10, 90, 100])
    assert knn_purity(embeds, ["a", "a", "b", "b"], k=1) == 1.0
    # Second neighbour: the nearest of the other pair (0 -> 10 then 90; 90 -> 100 then 10 ...).
    assert knn_purity(embeds, ["a", "a", "b", "b"], k=2) == 0.5
    # Each point's nearest is in the other group.
    assert knn_purity(embeds, ["a", "b", "a", "b"], k=1) == 0.0
    # Labels 0, 1, 2 at 0, 20, 30 degrees: 0 -> 1 (a, b: miss), 1 -> 2 (b, b: hit), 2 -> 1 (b, b: hit).
    assert knn_purity(directions([0, 20, 30]), ["a", "b", "b"], k=1) == pytest.approx(2 / 3)


def test_neighbours_exclude_the_label_and_break_ties_by_label_order():
    same = torch.ones(3, 4)  # every cosine is 1: all neighbours tie
    np.testing.assert_array_equal(nearest_neighbours(same, 2), [[1, 2], [0, 2], [0, 1]])
    # Row 0 -> 1 (miss), row 1 -> 0 (miss), row 2 -> 0 (hit).
    assert knn_purity(same, ["a", "b", "a"], k=1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k must be between 1 and"):
        knn_purity(same, ["a", "b", "a"], k=3)


def test_chance_purity_by_hand():
    # A, A, A: each has 2 of 3 others in its group; B: none.
    assert chance_purity(["a", "a", "a", "b"]) == pytest.approx((2 / 3 * 3 + 0) / 4)
    assert chance_purity(["a", "b"]) == 0.0


def test_label_geometry_on_a_constructed_case():
    embeds = directions([0, 30, 90])  # cosine distances: (0,1) 0.134, (0,2) 1, (1,2) 0.5
    hops = torch.tensor([[0, 1, 3], [1, 0, 2], [3, 2, 0]])  # the same order: rank correlation 1
    result = label_geometry(embeds, hops, ["a", "a", "b"], k=1)
    assert result["ontology_spearman"] == pytest.approx(1.0)
    assert result["knn_purity"] == pytest.approx(2 / 3)  # 0 -> 1 hit, 1 -> 0 hit, 2 -> 1 miss
    assert result["knn_chance"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert result["cos_mean"] == pytest.approx((math.cos(math.pi / 6) + 0 + 0.5) / 3, abs=1e-6)
    assert (result["k"], result["n_labels"]) == (1, 3)
    # Reversed hops: -1; against scipy on a tied case.
    reversed_hops = torch.tensor([[0, 3, 1], [3, 0, 2], [1, 2, 0]])
    assert label_geometry(embeds, reversed_hops, ["a", "a", "b"], 1)["ontology_spearman"] == pytest.approx(-1.0)
    tied = torch.tensor([[0, 1, 1], [1, 0, 2], [1, 2, 0]])
    expected = spearmanr([1 - math.cos(math.pi / 6), 1.0, 0.5], [1, 1, 2]).statistic
    assert label_geometry(embeds, tied, ["a", "a", "b"], 1)["ontology_spearman"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="differ"):
        label_geometry(embeds, hops, ["a", "b"], 1)


def test_top_level_names_from_ontology_paths():
    paths = ["Animal > Domestic animals > Dog", "Music", "Channel, environment and background > Noise"]
    assert top_level_names(paths) == ["Animal", "Music", "Channel, environment and background"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, ontology, mid_of):
    names = ["Speech", "Singing", "Dog", "Bark", "Cat", "Guitar", "Drum", "Door"]
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "demo_cnn",
        {"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.0},
        label_mids=[mid_of[name] for name in names],
        ontology=ontology,
        text_encoder=MINILM,
        projection_dim=8,
        frontend=frontend_preset("tiny"),
    )
    folder = tmp_path_factory.mktemp("geometry") / "spa" / "model"
    model.save_pretrained(folder)
    return folder, model


def test_analysis_script_end_to_end(checkpoint, ontology, tmp_path):
    folder, model = checkpoint
    analyze = load_recipe("analyze_label_text")
    argv = ["--first_labels", "12", "--styles", "direct", "concat", "--k", "3", "--checkpoint", str(folder),
            "--checkpoint_k", "2", "--output_dir", str(tmp_path)]  # fmt: skip
    rows = analyze.main(argv)
    assert [row["embeddings"] for row in rows] == ["T̂, direct", "T̂, concat", "T̂ (text encoder)", "E_t = p_t(T̂)"]
    # The encoder rows: the same numbers as the library on the same 12 descriptions.
    mids = ontology.label_mids[:12]
    groups = top_level_names(ontology.descriptions("concat", mids))
    distances = torch.from_numpy(ontology.distances_for(mids))
    for row, style in zip(rows[:2], ("direct", "concat"), strict=True):
        embeds = encode_label_descriptions(ontology.descriptions(style, mids), MINILM)
        assert row["n_labels"] == 12 and row["k"] == 3
        assert row["knn_purity"] == pytest.approx(knn_purity(embeds, groups, 3))
        assert row["ontology_spearman"] == pytest.approx(
            label_geometry(embeds, distances, groups, 3)["ontology_spearman"]
        )
    # The checkpoint rows come from its buffers: T̂ and E_t = p_t(T̂), categories from its label paths.
    checkpoint_groups = ["Human sounds"] * 2 + ["Animal"] * 3 + ["Music"] * 2 + ["Sounds of things"]
    assert top_level_names(model.config.label_paths) == checkpoint_groups
    with torch.no_grad():
        after = label_geometry(model.label_embeds(), model.label_distances, checkpoint_groups, 2)
    assert rows[3]["knn_purity"] == pytest.approx(after["knn_purity"])
    assert rows[3]["ontology_spearman"] == pytest.approx(after["ontology_spearman"])
    assert rows[3]["cos_mean"] == pytest.approx(after["cos_mean"])
    assert json.loads((tmp_path / "geometry.json").read_text()) == rows  # JSON floats round-trip exactly
    table = (tmp_path / "geometry.md").read_text()
    assert f"{rows[1]['ontology_spearman']:.3f}" in table and "T̂, concat" in table
    for png in ("tsne_sentence-transformers_all-MiniLM-L6-v2.png", "tsne_spa.png"):
        image = matplotlib.image.imread(tmp_path / png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_checkpoint_names_keep_the_variant_of_seed_folders():
    analyze = load_recipe("analyze_label_text")
    assert analyze.checkpoint_name("/runs/paper/seed_0/model") == "paper/seed_0"
    assert analyze.checkpoint_name("/runs/wo_spa/seed_12") == "wo_spa/seed_12"
    assert analyze.checkpoint_name("/runs/spa/model") == "spa"
    assert analyze.slug(analyze.checkpoint_name("/runs/paper/seed_0/model")) == "paper_seed_0"
