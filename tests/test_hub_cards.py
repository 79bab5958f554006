"""Model cards: a Hub-ready model-index, whatever the dataset argument was."""

from pathlib import Path

import yaml

from modeling_spa import SPAConfig
from modeling_spa.frontend import frontend_preset
from modeling_spa.hub_cards import dataset_id, render_model_card

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
    template = Path(__file__).resolve().parent.parent / "hub_cards" / "model_card.md"
    card = render_model_card(config(), "org/spa-tiny", RESULTS, dataset="agkphysics/AudioSet", template=template)
    table_and_note = card.split("## Results\n")[1].split("OmAP averages")[0]
    assert "| test | 0.4000 | 0.7000 |" in table_and_note and "17,142 of the 20,371 clips" in table_and_note
    other = render_model_card(config(), "org/spa-tiny", RESULTS, dataset="my/other_audioset", template=template)
    assert "17,142" not in other and "| test | 0.4000 | 0.7000 |\n\nOmAP averages" in other


def test_the_card_prints_the_training_augmentation():
    template = Path(__file__).resolve().parent.parent / "hub_cards" / "model_card.md"
    settings = config()
    assert "| training augmentation | none " in render_model_card(settings, "org/spa-tiny", RESULTS, template=template)
    settings.augmentation = {"mixup_alpha": 0.3, "time_masks": 2, "time_mask_width": 192}
    card = render_model_card(settings, "org/spa-tiny", RESULTS, template=template)
    assert "| training augmentation | mixup Beta(0.3, 0.3) on the log-mel, p = 1; SpecAugment 2 × ≤ 192 frames" in card
