"""Model cards: a Hub-ready model-index, whatever the dataset argument was."""

from pathlib import Path

import yaml

from modeling_spa import SPAConfig
from modeling_spa.frontend import frontend_preset
from modeling_spa.hub.cards import dataset_id, render_model_card

RESULTS = {"validation": {"map": 0.5, "omap": 0.75}, "test": {"map": 0.4, "omap": 0.7}}


def card_metadata(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def config() -> SPAConfig:
    return SPAConfig(
        backbone="demo_cnn",
        audio_config={"hidden_sizes": [4], "num_mel_bins": 64},
        frontend=frontend_preset("tiny"),
        label_mids=["/m/09x0r", "/m/05zppz"],
        label_names=["Speech", "Male speech, man speaking"],
    )


def test_a_local_build_is_recorded_by_its_folder_name_never_its_path(tmp_path):
    build = tmp_path / "my_audioset_build"
    (build / "data").mkdir(parents=True)
    shard = build / "data" / "train-00000-of-00001.parquet"
    shard.write_bytes(b"")
    for given in (str(build), str(shard), f"{build}/"):
        assert dataset_id(given) == "my_audioset_build", given
        card = render_model_card(config(), "org/spa-tiny", RESULTS, dataset=given)
        assert str(tmp_path) not in card
        [index] = card_metadata(card)["model-index"]
        assert {r["dataset"]["name"] for r in index["results"]} == {"my_audioset_build"}
        assert {r["dataset"]["type"] for r in index["results"]} == {"my_audioset_build"}


def test_a_hub_dataset_keeps_its_id():
    card = render_model_card(config(), "org/spa-tiny", RESULTS, dataset="agkphysics/AudioSet")
    [index] = card_metadata(card)["model-index"]
    assert {r["dataset"]["type"] for r in index["results"]} == {"agkphysics/AudioSet"}
    values = {(r["dataset"]["split"], m["type"]): m["value"] for r in index["results"] for m in r["metrics"]}
    assert values == {("validation", "map"): 0.5, ("validation", "omap"): 0.75, ("test", "map"): 0.4,
                      ("test", "omap"): 0.7}  # fmt: skip
    # The Hub copy's eval set misses clips: said next to the results, and only for that dataset. (The template of
    # this checkout: an editable install elsewhere would give that checkout's.)
    template = Path(__file__).resolve().parents[2] / "hub_cards" / "model_card.md"
    card = render_model_card(config(), "org/spa-tiny", RESULTS, dataset="agkphysics/AudioSet", template=template)
    table_and_note = card.split("## Results\n")[1].split("OmAP averages")[0]
    assert "| test | 0.4000 | 0.7000 |" in table_and_note and "17,142 of the 20,371 clips" in table_and_note
    other = render_model_card(config(), "org/spa-tiny", RESULTS, dataset="my/other_audioset", template=template)
    assert "17,142" not in other and "| test | 0.4000 | 0.7000 |\n\nOmAP averages" in other


def test_the_card_prints_the_training_augmentation():
    template = Path(__file__).resolve().parents[2] / "hub_cards" / "model_card.md"
    settings = config()
    assert "| training augmentation | none " in render_model_card(settings, "org/spa-tiny", RESULTS, template=template)
    settings.augmentation = {"mixup_alpha": 0.3, "time_masks": 2, "time_mask_width": 192}
    card = render_model_card(settings, "org/spa-tiny", RESULTS, template=template)
    assert "| training augmentation | mixup Beta(0.3, 0.3) on the log-mel, p = 1; SpecAugment 2 × ≤ 192 frames" in card


DIAGNOSTICS = {"text_cos_mean": 0.41, "text_cos_min": 0.01, "text_ontology_spearman": 0.66, "label_cos_mean": 0.991,
               "label_cos_min": 0.971, "label_ontology_spearman": 0.43, "audio_positive_cos": 0.974,
               "audio_negative_cos": 0.966, "audio_cos_margin": 0.008, "audio_label_auc": float("nan")}  # fmt: skip


def test_the_card_shows_the_label_space_diagnostics_and_the_objective(tmp_path):
    template = Path(__file__).resolve().parents[2] / "hub_cards" / "model_card.md"
    results = {split: values | DIAGNOSTICS for split, values in RESULTS.items()}
    history = [{"epoch": 0, "train_spa_loss": 0.22, **{f"eval_{k}": v for k, v in DIAGNOSTICS.items()},
                "eval_map": 0.5, "eval_omap": 0.75}]  # fmt: skip
    card = render_model_card(config(), "org/spa-tiny", results, template=template, history=history)
    assert "## Label space" in card and "E_t: mean pairwise cosine 0.991 (min 0.971), Spearman 0.430" in card
    assert "| test | 0.974 | 0.966 | 0.008 | n/a |" in card  # NaN (no clip with both kinds of label) as n/a
    assert "| 0 | 0.220 | 0.991 | 0.971 | 0.430 | 0.008 | n/a | 0.500 | 0.750 |" in card
    assert "0.3 · (L_SPA + 1 · L_geo); L_SPA is the paper's Eq. 4" in card and "p_t learned, with bias" in card
    paper = config()
    paper.spa_geometry_weight = 0.0  # the paper's exact objective
    assert "0.3 · L_SPA; L_SPA is the paper's Eq. 4" in render_model_card(paper, "o/s", RESULTS, template=template)
    # Without diagnostics (results from elsewhere) the section says how to compute them; a template written before
    # the section gets it after the results table.
    assert "Not computed (see `python -m modeling_spa.analysis.diagnostics`)" in render_model_card(
        config(), "o/s", RESULTS, template=template
    )
    old = tmp_path / "old.md"
    old.write_text(template.read_text().replace("## Label space\n$diagnostics\n", ""))
    assert "### Label space\nE_t = p_t(T̂)" in render_model_card(config(), "o/s", results, template=old)
    frozen = config()
    frozen.freeze_text_projection, frozen.center_label_text, frozen.spa_objective = True, True, "contrastive"
    objective = render_model_card(frozen, "o/s", RESULTS, template=template)
    assert "softmax cross-entropy, τ = 0.1; centred T̂" in objective and "p_t frozen at its initialisation" in objective
