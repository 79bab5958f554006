"""Per-class decision thresholds: calibration, F1, the config field, the card section, and the pipeline helper."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from transformers import pipeline

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.frontend import frontend_preset
from modeling_spa.hub.cards import THRESHOLDS_HEADING, render_model_card, update_thresholds_section
from modeling_spa.tagging.thresholds import (
    calibrate_thresholds,
    f1_report,
    pipeline_tags,
    resolve_thresholds,
    store_thresholds,
)

MIDS = ["/m/09x0r", "/m/0bt9lr", "/m/01yrx"]  # Speech, Dog, Cat
NAMES = ["Speech", "Dog", "Cat"]


def config(**overrides) -> SPAConfig:
    return SPAConfig(backbone="demo_cnn", frontend=frontend_preset("tiny"), label_mids=MIDS, label_names=NAMES,
                     text_hidden_size=8, projection_dim=8, window_length_s=1.0, **overrides)  # fmt: skip


def test_calibration_maximises_each_classs_f1():
    rng = np.random.default_rng(0)
    labels = rng.random((300, 4)) < [0.1, 0.3, 0.5, 0.01]
    scores = np.clip(labels * rng.uniform(0.1, 0.6, 4) + rng.normal(0.3, 0.15, (300, 4)), 0, 1).round(2)  # with ties
    calibration = calibrate_thresholds(scores, labels, min_positives=5)
    for c in range(3):
        best = max(f1_score(labels[:, c], scores[:, c] >= t) for t in np.unique(scores[:, c]))
        chosen = f1_score(labels[:, c], scores[:, c] >= calibration.thresholds[c])
        assert chosen == pytest.approx(best)
        assert calibration.thresholds[c] not in scores[:, c]  # midway between two scores, not on a clip
    assert labels[:, 3].sum() < 5 and calibration.fallback_classes == [3] and calibration.thresholds[3] == 0.5
    record = calibration.record(split="validation")
    assert record["n_fallback"] == 1 and record["split"] == "validation" and record["min_positives"] == 5


def test_a_clean_separation_is_cut_in_the_middle():
    scores = np.array([[0.9], [0.8], [0.3], [0.2]])
    labels = np.array([[1], [1], [0], [0]])
    assert calibrate_thresholds(scores, labels, min_positives=1).thresholds[0] == pytest.approx(0.55)
    with pytest.raises(ValueError, match=r"must both be \(clips, classes\)"):
        calibrate_thresholds(scores, labels[:, 0])


def test_f1_report_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.random((50, 5)) < 0.3
    labels[:, 4] = False  # no positive: out of the macro average
    scores = rng.random((50, 5))
    thresholds = np.array([0.2, 0.4, 0.5, 0.7, 0.5])
    report = f1_report(scores, labels, thresholds)
    predicted = scores >= thresholds
    assert report["micro_f1"] == pytest.approx(f1_score(labels, predicted, average="micro"))
    assert report["macro_f1"] == pytest.approx(f1_score(labels[:, :4], predicted[:, :4], average="macro"))
    assert report["n_classes_evaluated"] == 4


def test_thresholds_live_in_the_config_and_leave_with_its_classes(tmp_path):
    settings = config(thresholds=[0.3, 0.6, 0.45], threshold_calibration={"split": "validation"})
    settings.save_pretrained(tmp_path)
    loaded = SPAConfig.from_pretrained(tmp_path)
    assert loaded.thresholds == [0.3, 0.6, 0.45] and loaded.threshold_calibration == {"split": "validation"}
    assert SPAConfig.from_pretrained(tmp_path, id2label={0: "a", 1: "b", 2: "c"}).thresholds == [0.3, 0.6, 0.45]
    reheaded = SPAConfig.from_pretrained(tmp_path, num_labels=5)  # other classes: the thresholds describe others
    assert reheaded.thresholds is None and reheaded.threshold_calibration is None
    with pytest.raises(ValueError, match="thresholds holds 2 values for 3 classes"):
        config(thresholds=[0.3, 0.6])
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\], got \[1.2\]"):
        config(thresholds=[0.3, 1.2, 0.5])
    with pytest.raises(ValueError, match="thresholds holds 1 values for 3 classes"):
        loaded.thresholds = [0.5]


def test_resolving_thresholds_names_what_is_missing():
    calibrated = config(thresholds=[0.3, 0.6, 0.45])
    np.testing.assert_array_equal(resolve_thresholds(calibrated, "auto"), [0.3, 0.6, 0.45])
    np.testing.assert_array_equal(resolve_thresholds(calibrated, "0.25"), [0.25] * 3)
    np.testing.assert_array_equal(resolve_thresholds(calibrated, [0.1, 0.2, 0.3]), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"no calibrated thresholds.*--calibrate --write_thresholds"):
        resolve_thresholds(config(), "auto")
    with pytest.raises(ValueError, match="'auto' or a number"):
        resolve_thresholds(calibrated, "high")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        resolve_thresholds(calibrated, 2)


def test_the_card_records_the_thresholds_and_they_can_be_rewritten(tmp_path):
    record = {"method": "per-class maximum F1", "dataset": "mixtures", "split": "validation", "n_clips": 200,
              "min_positives": 3, "fallback": 0.5, "n_fallback": 1,
              "f1": {"fixed_0.5": {"micro_f1": 0.2, "macro_f1": 0.1}}}  # fmt: skip
    card = render_model_card(config(), "org/tiny")
    assert f"{THRESHOLDS_HEADING}\nNot calibrated" in card
    calibrated = config(thresholds=[0.3, 0.6, 0.45], threshold_calibration=record)
    updated = update_thresholds_section(card, calibrated)
    assert "chosen on mixtures validation (200 clips) by per-class maximum F1; 1 class(es) with fewer than 3" in updated
    assert "| Dog | 0.600 |" in updated and "| fixed_0.5 | 0.2000 | 0.1000 |" in updated
    assert "Not calibrated" not in updated and updated.count(THRESHOLDS_HEADING) == 1
    assert updated.split(THRESHOLDS_HEADING)[0] == card.split(THRESHOLDS_HEADING)[0]  # the rest is kept
    assert "## Use" in updated and updated.index("## Use") > updated.index("| Dog | 0.600 |")
    assert update_thresholds_section(updated, calibrated) == updated
    # Into a checkpoint folder: config.json read afresh and the card's section.
    config().save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text(card)
    store_thresholds(tmp_path, np.array([0.3, 0.6, 0.45]), record)
    assert SPAConfig.from_pretrained(tmp_path).thresholds == [0.3, 0.6, 0.45]
    assert "| Cat | 0.450 |" in (tmp_path / "README.md").read_text()


def test_the_pipeline_keeps_its_scores_and_pipeline_tags_applies_the_thresholds(tmp_path):
    torch.manual_seed(0)
    model = SPAForAudioClassification(config(thresholds=[0.0, 1.0, 0.5])).eval()
    model.save_pretrained(tmp_path)
    SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0).save_pretrained(tmp_path)
    tagger = pipeline("audio-classification", model=str(tmp_path))
    audio = np.random.default_rng(2).uniform(-0.3, 0.3, 16000).astype(np.float32)
    predictions = tagger(audio, top_k=3)
    tags = pipeline_tags(predictions, tagger.model.config)
    scores = {p["label"]: p["score"] for p in predictions}
    expected = [name for name, t in zip(NAMES, [0.0, 1.0, 0.5], strict=True) if scores[name] >= t]
    assert sorted(t["label"] for t in tags) == sorted(expected) and "Speech" in expected and "Dog" not in expected
    assert [t["score"] for t in tags] == sorted((t["score"] for t in tags), reverse=True)
    assert {t["label"]: t["threshold"] for t in tags}["Speech"] == 0.0
    everything = pipeline_tags(predictions, tagger.model.config, 0.0)
    assert [t["label"] for t in everything] == [p["label"] for p in predictions]
    with pytest.raises(ValueError, match="not among the model's classes"):
        pipeline_tags([{"label": "Siren", "score": 0.9}], tagger.model.config)
