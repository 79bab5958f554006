"""Data from where users have it (a CSV folder, an audiofolder, any `datasets` audio dataset with a label column) on a
tiny folder of real recordings, single-label training (softmax cross-entropy, accuracy), and cross-validation."""

import io
import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
from real_folder import NAMES, make_audiofolder, make_real_folder
from recipe_loader import load_recipe

from modeling_spa.analysis.reporting import cross_validation_summary, cross_validation_table
from modeling_spa.configuration_spa import MULTI_LABEL, SINGLE_LABEL
from modeling_spa.data import AudioSetCollator
from modeling_spa.data.sources import fold_splits, folds_of, open_own_data, read_folder_csv
from modeling_spa.evaluation import accuracy
from modeling_spa.losses import single_label_loss

REPO = Path(__file__).resolve().parents[2]
ORDER = ["dog", "cat", "kick", "snare"]  # the taxonomy file's order


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return make_real_folder(root), make_audiofolder(root)


def test_a_csv_folder_with_a_taxonomy(real):
    folder, _ = real
    own = open_own_data(str(folder / "labels.csv"), taxonomy=str(folder / "taxonomy.csv"))
    assert own.classes == ORDER and own.problem_type == SINGLE_LABEL
    assert own.taxonomy.has_hierarchy and own.taxonomy.label_ids == ORDER
    rows = own.splits["train"]
    assert len(rows) == 16 and {tuple(labels) for labels in rows["labels"]} == {(c,) for c in ORDER}
    assert rows[0]["video_id"].startswith("audio/dog_00") and Path(rows[0]["audio"]["path"]).is_file()
    assert rows.features["audio"] == datasets.Audio(decode=False)  # never decoded by datasets (torchcodec)
    assert "fold" in rows.column_names


def test_clips_at_any_rate_are_resampled_on_the_fly(real):
    folder, _ = real
    rows = open_own_data(str(folder / "labels.csv"), taxonomy=str(folder / "taxonomy.csv")).splits["train"]
    collate = AudioSetCollator(sampling_rate=16000, label_mids=ORDER, max_length_s=0.0)
    batch = collate([rows[0], rows[1]])  # FLAC at 16 kHz, WAV at 44.1 kHz
    assert batch["valid"].all() and batch["labels"][:, 0].tolist() == [1.0, 1.0]
    wav = soundfile.info(rows[1]["audio"]["path"])
    assert wav.samplerate == 44100
    assert batch["attention_mask"][1].sum().item() == pytest.approx(wav.frames * 16000 / 44100, abs=2)


def test_unknown_labels_and_missing_files_are_listed_in_one_error(real, tmp_path):
    folder, _ = real
    bad = tmp_path / "bad.csv"
    bad.write_text((folder / "labels.csv").read_text().replace(",dog,", ",Dgo,").replace(",snare,", ",Snear,"))
    with pytest.raises(ValueError, match=r"2 label\(s\).*'Dgo' \(closest known: 'Dog'\).*'Snear' \(closest known: "
                                         r"'Snare'\)"):  # fmt: skip
        open_own_data(str(bad), audio_dir=str(folder), taxonomy=str(folder / "taxonomy.csv"))
    missing = tmp_path / "missing.csv"
    missing.write_text("file,label\naudio/nope.wav,dog\n" + "\n".join((folder / "labels.csv").read_text().split(
        "\n")[1:3]) + "\nalso/gone.flac,cat\n")  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"2 file\(s\) not found.*row 2 \('audio/nope.wav'\).*row 5"):
        read_folder_csv(missing, audio_dir=folder)


def test_without_a_taxonomy_the_labels_are_a_flat_list(real):
    folder, _ = real
    own = open_own_data(str(folder / "labels.csv"))
    assert not own.taxonomy.has_hierarchy
    # Labels that differ in case are one class (spelled as first seen); other names are other classes.
    assert own.classes == ["cat", "Dog", "kick", "Kick drum", "Snare"]


def test_an_audiofolder_has_classlabel_names(real):
    _, audiofolder = real
    own = open_own_data("audiofolder", data_dir=str(audiofolder), taxonomy=str(audiofolder.parent / "my_sounds" /
                                                                              "taxonomy.csv"))  # fmt: skip
    assert own.classes == ["cat", "dog", "kick", "snare"]  # the ClassLabel's order (folder names, sorted)
    assert own.problem_type == SINGLE_LABEL and len(own.splits["train"]) == 16


@pytest.mark.parametrize("form", ["classlabel", "sequence", "string", "list"])
def test_any_dataset_with_a_label_column(real, tmp_path, form):
    folder, _ = real
    rows = open_own_data(str(folder / "labels.csv"), taxonomy=str(folder / "taxonomy.csv")).splits["train"]
    audio = [{"bytes": Path(a["path"]).read_bytes(), "path": Path(a["path"]).name} for a in rows["audio"]]
    names = [labels[0] for labels in rows["labels"]]
    if form == "classlabel":
        feature, values = datasets.ClassLabel(names=ORDER), [ORDER.index(n) for n in names]
    elif form == "sequence":  # two labels on the first clip: multi-label
        feature = datasets.Sequence(datasets.ClassLabel(names=ORDER))
        values = [[ORDER.index(n)] for n in names]
        values[0] = [0, 2]
    elif form == "string":
        feature, values = datasets.Value("string"), [NAMES[n] for n in names]  # by name
    else:
        feature, values = datasets.Sequence(datasets.Value("string")), [[n] for n in names]
    struct = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    data = datasets.Dataset.from_dict({"audio": audio, "sound": values},
                                      features=datasets.Features({"audio": struct, "sound": feature}))  # fmt: skip
    data.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(tmp_path / "ds"))
    own = open_own_data(str(tmp_path / "ds"), label_column="sound", taxonomy=str(folder / "taxonomy.csv"))
    labels = own.splits["train"]["labels"]
    assert labels[1] == [names[1]]
    assert own.problem_type == (MULTI_LABEL if form == "sequence" else SINGLE_LABEL)
    assert own.classes == (ORDER if form in ("classlabel", "sequence") else ORDER)
    assert own.splits["train"]["video_id"][0] == audio[0]["path"]  # the file's name: clip ids for the hold-out


def test_folds(real):
    folder, _ = real
    own = open_own_data(str(folder / "labels.csv"), taxonomy=str(folder / "taxonomy.csv"), fold_column="fold",
                        test_fold="2")  # fmt: skip
    assert set(own.splits["test"]["fold"]) == {"2"} and set(own.splits["train"]["fold"]) == {"1"}
    assert len(own.splits["test"]) == 8
    assert folds_of(str(folder / "labels.csv"), "fold") == ["1", "2"]
    with pytest.raises(ValueError, match=r"No clip has fold = '7'.*\['1', '2'\]"):
        fold_splits(own.splits, "fold", "7")


def test_single_label_loss_and_accuracy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 0]])  # a mixup row, and a placeholder without labels
    log_softmax = torch.log_softmax(logits, dim=-1)
    expected = (-log_softmax[0, 0] - 0.5 * (log_softmax[1, 0] + log_softmax[1, 1])) / 2
    assert single_label_loss(logits, labels).item() == pytest.approx(expected.item())
    assert single_label_loss(logits, torch.zeros(3, 3)).item() == 0.0  # no NaN
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])  # the third clip has two labels: left out
    assert accuracy(scores, truth) == 0.5


def test_cross_validation_summary():
    folds = {"1": {"accuracy": 0.5, "map": 0.6, "omap": None}, "2": {"accuracy": 0.7, "map": 0.8, "omap": None}}
    summary = cross_validation_summary(folds)
    assert summary["accuracy"]["mean"] == pytest.approx(0.6)
    assert summary["accuracy"]["std"] == pytest.approx(0.1414, 1e-3)
    assert "omap" not in summary  # a flat label list has no OmAP
    assert "| accuracy | 0.6000 ± 0.1414 | 0.5000 0.7000 |" in cross_validation_table(summary)


def test_train_and_evaluate_an_audiofolder_end_to_end(real, tmp_path):
    """From scratch on an audiofolder of real recordings with a taxonomy, single-label: accuracy, mAP, OmAP on the
    custom hierarchy; then evaluated on the CSV folder (the same recordings, other rates) by name matching."""
    folder, audiofolder = real
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "recipes" / "train.py"), str(REPO / "recipes/configs/fine_tune_small.yaml"),
               "--dataset", "audiofolder", "--data_dir", str(audiofolder), "--taxonomy", str(folder / "taxonomy.csv"),
               "--audio_config", '{"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.1}',
               "--num_epochs", "2", "--batch_size", "8", "--validation_fraction", "0.25", "--num_workers", "0",
               "--output_dir", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "model" / "eval_results.json").read_text())["validation"]
    assert {"accuracy", "map", "omap"} <= set(results) and len(results["omap_per_lambda"]) == 5  # distances 2..4
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["problem_type"] == SINGLE_LABEL and config["label_mids"] == ["cat", "dog", "kick", "snare"]
    assert config["taxonomy"] == {"name": "taxonomy", "source": "taxonomy.csv", "nodes": 7, "hierarchy": True}
    assert config["label_texts"][0] == "Everything > Pets > Cat"
    card = (out / "model" / "README.md").read_text()
    assert "| taxonomy | taxonomy (7 nodes, a hierarchy, from `taxonomy.csv`) |" in card
    assert "| Kick drum | Everything > Drum kit > Kick drum |" in card and "softmax cross-entropy" in card
    evaluate = load_recipe("evaluate")
    summary = evaluate.main(["--model", str(out / "model"), "--dataset", str(folder / "labels.csv"), "--split", "train",
                             "--output_dir", str(tmp_path / "eval"), "--num_workers", "0", "--cpu"])  # fmt: skip
    assert summary["n_clips"] == 16 and 0 <= summary["accuracy"] <= 1 and summary["omap"] is not None


def test_the_builder_resamples_once_into_a_build_that_trains_as_the_folder(real, tmp_path):
    folder, _ = real
    build = load_recipe("build_own_data")
    report = build.main(["--dataset", str(folder / "labels.csv"), "--taxonomy", str(folder / "taxonomy.csv"),
                         "--rate", "16000", "--output", str(tmp_path / "build")])  # fmt: skip
    assert report["splits"]["train"]["written"] == 16
    classes = json.loads((tmp_path / "build" / "classes.json").read_text())
    assert classes["mids"] == ORDER and classes["names"] == ["Dog", "Cat", "Kick drum", "Snare"]
    own = open_own_data(str(tmp_path / "build"), taxonomy=str(folder / "taxonomy.csv"), fold_column="fold",
                        test_fold="1")  # fmt: skip
    first = own.splits["train"][0]
    assert soundfile.info(io.BytesIO(first["audio"]["bytes"])).samplerate == 16000
    original = open_own_data(str(folder / "labels.csv"), taxonomy=str(folder / "taxonomy.csv"), fold_column="fold",
                             test_fold="1")  # fmt: skip
    assert own.splits["test"]["labels"] == original.splits["test"]["labels"]
    assert own.splits["test"]["video_id"] == original.splits["test"]["video_id"]
