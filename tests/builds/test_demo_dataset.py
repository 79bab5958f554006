"""The synthetic demo sounds (`modeling_spa.builds.synthetic`) and the AudioSet-format builder (recipes/)."""

import hashlib
import io
import json
import os
import stat
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from recipe_loader import load_recipe

from modeling_spa.builds import synthetic as demo_sounds
from modeling_spa.builds.synthetic import SOUND_CLASSES, SPEECH_CLASSES, synthesize

SR = 16000


builder = load_recipe("build_demo_dataset")

EXPECTED_FEATURES = datasets.Features(
    {
        "video_id": datasets.Value("string"),
        "audio": datasets.Audio(decode=False),
        "labels": datasets.List(datasets.Value("string")),
        "human_labels": datasets.List(datasets.Value("string")),
    }
)


def _tiny_build(path: Path, seed: int = 0, **kwargs) -> datasets.DatasetDict:
    sizes = {"num_train": 12, "num_validation": 4, "num_test": 4, "duration_s": 1.0, "speech": False}
    return builder.build_demo_dataset(path, seed=seed, **{**sizes, **kwargs})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "ds"
    _tiny_build(path)
    return path


def _content_hash(path: Path) -> str:
    """Hash of video_id, labels and audio bytes of every split, read back from the parquet files."""
    digest = hashlib.sha256()
    loaded = datasets.load_dataset(str(path))
    for split in builder.SPLITS:
        for row in loaded[split]:
            digest.update(row["video_id"].encode())
            digest.update("|".join(row["labels"]).encode())
            digest.update(row["audio"]["bytes"])
    return digest.hexdigest()


# -- the class registry ----------------------------------------------------------------------------------
def test_every_registered_name_is_an_audioset_label(ontology):
    labels = set(ontology.label_names)
    assert [name for name in [*SOUND_CLASSES, *SPEECH_CLASSES] if name not in labels] == []


def test_classes_span_the_ontology(ontology, mid_of):
    tops = {ontology.nodes[ontology.top_level(mid_of[name])].name for name in SOUND_CLASSES}
    assert len(SOUND_CLASSES) >= 24
    assert len(tops) >= 4
    assert {"Sounds of things", "Music", "Channel, environment and background", "Source-ambiguous sounds"} <= tops


def test_classes_include_parent_child_and_sibling_pairs(ontology, mid_of):
    names = list(SOUND_CLASSES)
    mids = [mid_of[name] for name in names]
    d = ontology.distances_for(mids)
    pairs = {(names[i], names[j]) for i, j in zip(*np.nonzero(d == 1), strict=True)}
    assert ("Siren", "Police car (siren)") in pairs
    assert ("Noise", "White noise") in pairs
    assert ontology.distances_for([mid_of["White noise"], mid_of["Pink noise"]])[0, 1] == 2
    assert ontology.distances_for([mid_of["Dial tone"], mid_of["Busy signal"]])[0, 1] == 2
    # siblings = distance 2 through a shared parent (not child-parent-grandparent)
    siblings = [
        (names[i], names[j])
        for i, j in zip(*np.nonzero(d == 2), strict=True)
        if set(ontology.nodes[mids[i]].parents) & set(ontology.nodes[mids[j]].parents)
    ]
    assert len(siblings) >= 10


@pytest.mark.parametrize("name", list(SOUND_CLASSES))
@pytest.mark.parametrize(("duration_s", "sample_rate"), [(1.0, SR), (0.4, 8000)])
def test_every_class_synthesises_a_sound(name, duration_s, sample_rate):
    audio = synthesize(name, np.random.default_rng(7), duration_s, sample_rate)
    assert audio.dtype == np.float32
    assert audio.shape == (round(duration_s * sample_rate),)
    assert np.isfinite(audio).all()
    assert np.max(np.abs(audio)) == pytest.approx(1.0, abs=1e-6)
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01


def test_synthesis_is_deterministic_and_parameters_vary():
    first = synthesize("Police car (siren)", np.random.default_rng(1), 1.0, SR)
    again = synthesize("Police car (siren)", np.random.default_rng(1), 1.0, SR)
    other = synthesize("Police car (siren)", np.random.default_rng(2), 1.0, SR)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_noise_colours_have_their_spectral_slopes():
    def slope(name: str) -> float:
        audio = synthesize(name, np.random.default_rng(0), 4.0, SR).astype(np.float64)
        power = np.abs(np.fft.rfft(audio)) ** 2
        freqs = np.fft.rfftfreq(audio.size, 1 / SR)
        band = (freqs > 50) & (freqs < 5000)
        return float(np.polyfit(np.log(freqs[band]), np.log(power[band] + 1e-20), 1)[0])

    assert slope("White noise") == pytest.approx(0.0, abs=0.2)
    assert slope("Pink noise") == pytest.approx(-1.0, abs=0.2)
    assert slope("Noise") < -1.5


def test_dial_tone_has_its_standard_frequencies():
    audio = synthesize("Dial tone", np.random.default_rng(3), 1.0, SR).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argsort(spectrum)[-1] * SR / audio.size
    assert min(abs(peak_hz - f) for f in (350, 425, 440, 450)) < 10


def test_unknown_class_and_bad_duration_raise():
    with pytest.raises(KeyError, match="No demo synthesiser"):
        synthesize("Not a class", np.random.default_rng(0), 1.0, SR)
    with pytest.raises(ValueError, match="positive"):
        synthesize("Siren", np.random.default_rng(0), 0.0, SR)


# -- labels ------------------------------------------------------------------------------------------------
def test_parent_labels_are_added_half_the_time(ontology, mid_of):
    police, siren, alarm = mid_of["Police car (siren)"], mid_of["Siren"], mid_of["Alarm"]
    parents = builder.registered_parents(ontology, [police, siren, alarm])
    assert parents == {police: [siren], siren: [alarm], alarm: []}
    rng = np.random.default_rng(0)
    draws = [builder.clip_labels(rng, [police], parents) for _ in range(2000)]
    assert all(police in labels for labels in draws)
    assert all(siren in labels for labels in draws if alarm in labels)  # no skipped generation
    assert np.mean([siren in labels for labels in draws]) == pytest.approx(0.5, abs=0.04)
    assert np.mean([alarm in labels for labels in draws]) == pytest.approx(0.25, abs=0.04)
    assert builder.clip_labels(rng, [police], parents, probability=0.0) == {police}


def test_demo_classes_are_in_csv_order_and_validated(ontology):
    classes = builder.demo_classes(ontology, speech=False)
    order = [ontology.label_mids.index(mid) for mid, _ in classes]
    assert order == sorted(order)
    assert {name for _, name in classes} == set(SOUND_CLASSES)
    with pytest.raises(ValueError, match="No demo sound"):
        builder.demo_classes(ontology, ["Siren", "Speech synthesizer"], speech=False)


# -- the built dataset -----------------------------------------------------------------------------------
def test_layout_and_card(tiny_dir):
    assert sorted(p.name for p in (tiny_dir / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    card = (tiny_dir / "README.md").read_text()
    assert card.startswith("---\n")
    assert "configs:" not in card  # see builder.parquet_name: a configs YAML makes load_dataset serve stale caches
    assert "license: cc-by-sa-4.0" in card and "CC0" in card
    assert "| /m/03kmc9 | Siren | Sounds of things | Alarm |" in card
    assert "not included" in card


def test_loads_back_with_exact_features(tiny_dir):
    loaded = datasets.load_dataset(str(tiny_dir))
    assert {split: loaded[split].num_rows for split in loaded} == {"train": 12, "validation": 4, "test": 4}
    for split in builder.SPLITS:
        assert loaded[split].features == EXPECTED_FEATURES
        assert loaded[split].column_names == ["video_id", "audio", "labels", "human_labels"]
    by_files = datasets.load_dataset(
        "parquet", data_files={"validation": str(tiny_dir / "data" / "validation-00000-of-00001.parquet")}
    )
    assert by_files["validation"]["video_id"] == [f"synth_validation_{i:06d}" for i in range(4)]


def test_audio_is_flac_at_the_right_rate_and_length(tiny_dir):
    loaded = datasets.load_dataset(str(tiny_dir), split="train")
    for row in loaded:
        assert row["audio"]["bytes"][:4] == b"fLaC"
        assert row["audio"]["path"] == f"{row['video_id']}.flac"
        audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        assert rate == SR
        assert audio.shape == (SR,)
        assert np.isfinite(audio).all()
        assert 0.005 < np.sqrt(np.mean(audio.astype(np.float64) ** 2))
        assert np.max(np.abs(audio)) <= builder.MIX_MAX_PEAK + 1e-3


def test_labels_are_valid_and_follow_the_rule(tiny_dir, ontology):
    listing = json.loads((tiny_dir / "classes.json").read_text())
    assert listing["names"] == [name for _, name in builder.demo_classes(ontology, speech=False)]
    assert listing["mids"] == [mid for mid, _ in builder.demo_classes(ontology, speech=False)]
    assert listing["build"]["speech"]["included"] is False
    parents = builder.registered_parents(ontology, listing["mids"])
    position = {mid: i for i, mid in enumerate(ontology.label_mids)}
    loaded = datasets.load_dataset(str(tiny_dir))
    for split in builder.SPLITS:
        for row in loaded[split]:
            labels = row["labels"]
            assert set(labels) <= set(listing["mids"])
            assert len(set(labels)) == len(labels)
            assert labels == sorted(labels, key=position.__getitem__)
            assert row["human_labels"] == [ontology.nodes[mid].name for mid in labels]
            # labels that are no parent of another label must be events: 1 to 3 of them
            implied = {p for mid in labels for p in parents[mid]}
            assert 1 <= len([mid for mid in labels if mid not in implied]) <= 3
            assert len(labels) <= 9


def test_every_class_appears_when_the_split_is_large_enough(tmp_path, mid_of):
    names = ["Siren", "Police car (siren)", "White noise", "Pink noise", "Drum", "Tick"]
    built = _tiny_build(tmp_path / "six", class_names=names, num_train=6, num_validation=6, num_test=6)
    for split in builder.SPLITS:
        seen = {mid for labels in built[split]["labels"] for mid in labels}
        assert seen == {mid_of[name] for name in names}


def test_same_seed_same_bytes_other_seed_other_audio(tiny_dir, tmp_path):
    again = tmp_path / "again"
    _tiny_build(again)
    for split in builder.SPLITS:
        name = builder.parquet_name(split)
        assert (tiny_dir / "data" / name).read_bytes() == (again / "data" / name).read_bytes()
    assert _content_hash(tiny_dir) == _content_hash(again)
    other = tmp_path / "elsewhere" / tiny_dir.name  # same folder name: must not hit the other build's cache
    _tiny_build(other, seed=1)
    assert _content_hash(other) != _content_hash(tiny_dir)


def test_a_rebuild_replaces_old_shards(tmp_path):
    out = tmp_path / "ds"
    _tiny_build(out)
    (out / "data" / "train-00001-of-00002.parquet").write_bytes(b"stale")
    _tiny_build(out, num_train=3)
    assert datasets.load_dataset(str(out), split="train").num_rows == 3


def test_cli_writes_the_dataset(tmp_path):
    out = tmp_path / "cli"
    args = ["--output", str(out), "--num-train", "2", "--num-validation", "1", "--num-test", "1"]
    assert builder.main([*args, "--duration", "0.5", "--sample-rate", "8000", "--speech", "off", "--seed", "3"]) == 0
    listing = json.loads((out / "classes.json").read_text())
    assert listing["build"]["sample_rate"] == 8000 and listing["build"]["seed"] == 3
    row = datasets.load_dataset(str(out), split="test")[0]
    audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
    assert (rate, audio.shape) == (8000, (4000,))


# -- speech through espeak-ng ----------------------------------------------------------------------------
FAKE_ESPEAK = """#!/bin/sh
# Stands in for espeak-ng: copies a prepared voiced sound to the file named after -w.
while [ $# -gt 0 ]; do
  if [ "$1" = "-w" ]; then cp "{template}" "$2"; fi
  shift
done
"""


@pytest.fixture
def fake_espeak(tmp_path, monkeypatch):
    template = tmp_path / "voice.wav"
    t = np.arange(int(22050 * 0.8)) / 22050
    voice = sum(np.sin(2 * np.pi * k * 120 * t) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    sf.write(template, 0.3 * voice, 22050)
    program = tmp_path / "bin" / "espeak-ng"
    program.parent.mkdir()
    program.write_text(FAKE_ESPEAK.format(template=template))
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")
    demo_sounds._speech_bank.cache_clear()
    yield program
    demo_sounds._speech_bank.cache_clear()


def test_speech_classes_use_espeak_ng_when_found(fake_espeak, ontology):
    assert demo_sounds.speech_available()
    assert demo_sounds.available_classes()[-3:] == list(SPEECH_CLASSES)
    male = synthesize("Male speech, man speaking", np.random.default_rng(0), 2.0, SR)
    assert male.shape == (2 * SR,) and np.isfinite(male).all() and np.sqrt(np.mean(male**2)) > 0.05
    mids = [mid for mid, _ in builder.demo_classes(ontology)]
    assert {ontology.nodes[mid].name for mid in mids} >= set(SPEECH_CLASSES)


def test_speech_is_skipped_without_espeak_ng(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_sounds.shutil, "which", lambda name: None)
    assert not demo_sounds.speech_available()
    assert demo_sounds.available_classes() == list(SOUND_CLASSES)
    with pytest.raises(RuntimeError, match="espeak-ng"):
        demo_sounds.available_classes(speech=True)
    built = builder.build_demo_dataset(tmp_path / "ds", 2, 1, 1, duration_s=0.5)
    assert built["train"].num_rows == 2
    listing = json.loads((tmp_path / "ds" / "classes.json").read_text())
    assert listing["build"]["speech"] == {
        "included": False,
        "reason": "espeak-ng not found on PATH, speech classes skipped",
    }
