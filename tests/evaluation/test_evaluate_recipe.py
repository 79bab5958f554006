"""recipes/evaluate.py on a tiny real build with tiny models: its numbers against compute_omap on the same scores,
the windows of long clips, bad clips, labels outside the classes, and the original AudioSet head."""

import csv
import io
import json

import datasets
import numpy as np
import pytest
import soundfile
import torch
from training_runs import CLASSES, load_recipe, with_rows

from modeling_spa import SPAConfig, SPAForAudioClassification, compute_omap
from modeling_spa.analysis.diagnostics import AUDIO_KEYS, LABEL_KEYS, label_space_diagnostics
from modeling_spa.backbone_cnn14 import Cnn14Config
from modeling_spa.data import decode_audio
from modeling_spa.data.splits import HELD_OUT, SplitSpec
from modeling_spa.frontend import frontend_preset

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LONG = "synth_long_2500ms"


def flac(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC")
    return buffer.getvalue()


def decode(row: dict) -> np.ndarray:
    return soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory, ontology):
    """train (8 clips) and test: 6 one-second clips, one of 2.5 s (longer than the model's 1 s window), one bad."""
    root = tmp_path_factory.mktemp("eval")
    built = load_recipe("build_demo_dataset").build_demo_dataset(
        root / "src", 8, 0, 6, duration_s=1.0, class_names=CLASSES, ontology=ontology, speech=False
    )
    test = built["test"]
    long_audio = np.concatenate([decode(test[0]), decode(test[1]), decode(test[2])[:8000]])
    extra = [
        {"video_id": LONG, "audio": {"bytes": flac(long_audio), "path": "long.flac"}, "labels": test[0]["labels"],
         "human_labels": []},
        {"video_id": "synth_bad_unreadable", "audio": {"bytes": b"garbage", "path": "bad.wav"},
         "labels": test[1]["labels"], "human_labels": []},
    ]  # fmt: skip
    out = root / "build"
    (out / "data").mkdir(parents=True)
    built["train"].to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    with_rows(test, extra).to_parquet(str(out / "data" / "test-00000-of-00001.parquet"))
    return out


@pytest.fixture(scope="module")
def spa_model(build, tmp_path_factory, ontology, mid_of):
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "demo_cnn",
        audio_config={"hidden_sizes": [4, 8], "num_mel_bins": 64},
        label_mids=[mid_of[name] for name in CLASSES],
        ontology=ontology,
        text_encoder=MINILM,
        projection_dim=16,
        frontend=frontend_preset("tiny"),
        window_length_s=1.0,
    )
    path = tmp_path_factory.mktemp("model") / "spa"
    model.save_pretrained(path)
    return path


def evaluate(*argv: str) -> dict:
    return load_recipe("evaluate").main([*argv, "--num_workers", "0", "--cpu"])


def test_results_equal_compute_omap_on_the_saved_scores(build, spa_model, tmp_path):
    out = tmp_path / "out"
    summary = evaluate("--model", str(spa_model), "--dataset", str(build), "--output_dir", str(out), "--save_scores")
    assert json.loads((out / "results.json").read_text()) == summary
    scores, labels = np.load(out / "scores.npy"), np.load(out / "labels.npy")
    ids = json.loads((out / "clip_ids.json").read_text())
    assert scores.shape == (7, 7) and labels.shape == (7, 7) and LONG in ids and "synth_bad_unreadable" not in ids
    model = SPAForAudioClassification.from_pretrained(spa_model).eval()
    result = compute_omap(labels, scores, model.label_distances.numpy())
    assert summary["map"] == pytest.approx(result["map"], abs=1e-12)
    assert summary["omap"] == pytest.approx(result["omap"], abs=1e-12)
    np.testing.assert_allclose(summary["omap_per_lambda"], result["omap_per_lambda"], atol=1e-12)
    assert summary["n_clips"] == 7 and summary["head"] == "spa" and "note" not in summary
    assert summary["skipped"]["count"] == 1 and summary["skipped"]["clips"][0][0] == "synth_bad_unreadable"
    assert "not audio (or a format soundfile cannot read)" in summary["skipped"]["clips"][0][1]
    with open(out / "per_class.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["mid"] for row in rows] == model.config.label_mids and rows[0]["name"] == model.config.label_names[0]
    np.testing.assert_allclose([float(row["ap"] or "nan") for row in rows], result["ap_per_class"], atol=1e-6)
    assert [int(row["positives"]) for row in rows] == labels.sum(axis=0).tolist()
    # The label-space diagnostics, from the same pass: the label figures are the model's own.
    assert {k: summary[k] for k in LABEL_KEYS} == pytest.approx(label_space_diagnostics(model), nan_ok=True)
    assert all(k in summary for k in AUDIO_KEYS) and 0 <= summary["audio_label_auc"] <= 1
    # The long clip, scored by hand: windows at 0, 1 s and the end-aligned 1.5 s, their sigmoid scores averaged.
    test = datasets.load_dataset("parquet", data_files=str(build / "data" / "test-*.parquet"))["train"]
    wave = torch.from_numpy(decode(next(row for row in test if row["video_id"] == LONG)))
    windows = torch.stack([wave[start : start + 16000] for start in (0, 16000, 24000)])
    with torch.no_grad():
        expected = model(input_values=windows).logits.sigmoid().double().mean(dim=0)
    torch.testing.assert_close(torch.from_numpy(scores[ids.index(LONG)]).double(), expected, atol=1e-5, rtol=0)


def test_labels_outside_the_classes_are_an_error_or_counted(build, spa_model, tmp_path):
    test = datasets.load_dataset("parquet", data_files=str(build / "data" / "test-*.parquet"))["train"]
    row = test[0] | {"video_id": "synth_with_speech", "labels": [*test[0]["labels"], "/m/09x0r"]}
    folder = tmp_path / "odd"
    (folder / "data").mkdir(parents=True)
    with_rows(test.select(range(6)), [row]).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    common = ("--model", str(spa_model), "--dataset", str(folder), "--output_dir", str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"clip synth_with_speech: labels \['/m/09x0r'\] are not among"):
        evaluate(*common)
    summary = evaluate(*common, "--unknown_labels", "ignore", "--streaming", "--batch_size", "4")
    assert summary["unknown_labels"] == {"ignored": True, "clips_per_mid": {"/m/09x0r": 1}}
    assert summary["n_clips"] == 7  # streamed: every clip once, the padding rows of the last batch dropped


def test_original_audioset_head_is_scored_as_is(build, tmp_path, ontology):
    """A CNN14 with its PANNs head and AudioSet's 527 labels, windows of 1 s: each clip's scores are the head's
    probabilities, a long clip's the mean over its windows."""
    torch.manual_seed(0)
    config = SPAConfig(backbone="cnn14", audio_config=Cnn14Config(hidden_sizes=[4, 8, 8, 16], embedding_size=16),
                       label_mids=ontology.label_mids, label_names=ontology.label_names, text_hidden_size=8,
                       projection_dim=8, window_length_s=1.0)  # fmt: skip
    model = SPAForAudioClassification(config).eval()
    model.label_distances.copy_(torch.as_tensor(ontology.distances))  # a converted checkpoint carries them
    model.save_pretrained(tmp_path / "cnn14")
    out = tmp_path / "out"
    summary = evaluate("--model", str(tmp_path / "cnn14"), "--dataset", str(build), "--output_dir", str(out),
                       "--audioset_head", "--save_scores")  # fmt: skip
    scores, labels = np.load(out / "scores.npy"), np.load(out / "labels.npy")
    ids = json.loads((out / "clip_ids.json").read_text())
    assert summary["head"] == "audioset" and scores.shape == (7, 527)
    assert not set(LABEL_KEYS + AUDIO_KEYS) & set(summary)  # the original head has no E_a to diagnose
    assert summary["map"] == pytest.approx(compute_omap(labels, scores, ontology.distances)["map"], abs=1e-12)
    test = {row["video_id"]: row for row in datasets.load_dataset("parquet", data_files=str(build / "data" /
                                                                  "test-*.parquet"))["train"]}  # fmt: skip
    short, long = (torch.from_numpy(decode_audio(test[clip]["audio"], 32000)) for clip in (ids[0], LONG))
    with torch.no_grad():
        expected_short = model.audioset_scores(short[None])[0]
        expected_long = model.audioset_scores(torch.stack([long[s : s + 32000] for s in (0, 32000, 48000)])).mean(0)
    torch.testing.assert_close(torch.from_numpy(scores[0]), expected_short, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(scores[ids.index(LONG)]), expected_long, atol=1e-5, rtol=0)


def test_audioset_head_needs_the_527_labels_in_order(build, spa_model, tmp_path, ontology, mid_of):
    with pytest.raises(ValueError, match="'demo_cnn' backbone keeps no original AudioSet head"):
        evaluate("--model", str(spa_model), "--dataset", str(build), "--audioset_head")
    config = SPAConfig(backbone="cnn14", audio_config=Cnn14Config(hidden_sizes=[4, 8, 8, 16], embedding_size=16),
                       label_mids=[mid_of[name] for name in CLASSES], text_hidden_size=8, projection_dim=8)  # fmt: skip
    SPAForAudioClassification(config).save_pretrained(tmp_path / "seven")
    with pytest.raises(ValueError, match=r"label_mids are not those \(7 classes\)"):
        evaluate("--model", str(tmp_path / "seven"), "--dataset", str(build), "--audioset_head")


def test_validation_of_a_dataset_without_one_is_the_training_hold_out(build):
    recipe = load_recipe("evaluate")
    spec = recipe.split_spec(recipe.parse_args(["--model", "m", "--dataset", str(build), "--split", "validation"]))
    assert spec == SplitSpec("validation", "train", HELD_OUT, 0.05, 0)
    with pytest.raises(ValueError, match=r"has no split 'dev'; its splits: \['train', 'test'\]"):
        recipe.split_spec(recipe.parse_args(["--model", "m", "--dataset", str(build), "--split", "dev"]))
