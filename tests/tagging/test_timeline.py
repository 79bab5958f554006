"""Timelines with a model: the windows of a file, events offline and as a stream (the same events, within the stated
latency), ontology-consistent scores, and spa-tag's decision options."""

import json

import numpy as np
import pytest
import soundfile
import torch

from modeling_spa import SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.cli import tag as cli
from modeling_spa.frontend import frontend_preset
from modeling_spa.tagging.events import EventRules
from modeling_spa.tagging.hierarchy import LabelHierarchy, node_tags
from modeling_spa.tagging.stream import EventStream
from modeling_spa.tagging.timeline import WindowScores, file_events, file_window_scores, window_probabilities
from modeling_spa.windowing import window_starts

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RATE = 16000
NAMES = ["Speech", "Dog", "Bark", "Cat", "Music", "Guitar", "Car"]


@pytest.fixture(scope="module")
def model(mid_of, ontology):
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "demo_cnn", {"hidden_sizes": [8, 16], "num_mel_bins": 64, "dropout": 0.0},
        label_mids=[mid_of[n] for n in NAMES], ontology=ontology, text_encoder=MINILM, projection_dim=16,
        frontend=frontend_preset("tiny"), window_length_s=1.0,
    )  # fmt: skip
    with torch.no_grad():  # spread the scores, so that classes switch on and off
        model.classifier.weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def extractor():
    return SPAFeatureExtractor(sampling_rate=RATE, max_length_s=1.0)


def scene(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts of changing loudness and colour, with silences, so that window scores change over time."""
    rng = np.random.default_rng(seed)
    pieces = []
    while sum(map(len, pieces)) < seconds * RATE:
        length = int(rng.uniform(0.2, 1.5) * RATE)
        noise = rng.standard_normal(length) * rng.uniform(0.0, 0.6) * (rng.random() < 0.7)
        pieces.append(np.cumsum(noise) * 0.05 if rng.random() < 0.5 else noise)  # brown or white
    return np.concatenate(pieces)[: int(seconds * RATE)].astype(np.float32)


def test_window_scores_are_the_models_on_each_window(model, extractor, tmp_path):
    wave = scene(4.3, 1)
    soundfile.write(tmp_path / "a.wav", wave, RATE, subtype="FLOAT")
    windows = list(file_window_scores(str(tmp_path / "a.wav"), model, extractor, hop_s=0.25, windows_per_batch=5))
    starts = window_starts(len(wave), RATE, RATE // 4)
    assert [w.start for w in windows] == [s / RATE for s in starts] and starts[-1] == len(wave) - RATE
    assert all(w.end == w.start + 1.0 for w in windows)
    with torch.no_grad():
        expected = model(torch.stack([torch.from_numpy(wave[s : s + RATE]) for s in starts])).logits.sigmoid()
    np.testing.assert_allclose(np.stack([w.scores for w in windows]), expected.numpy(), atol=1e-5)


def test_the_stream_gives_the_offline_events_within_its_latency(model, extractor, tmp_path):
    """The same audio at 44.1 kHz stereo, fed in random chunks, gives the offline timeline's windows and events; each
    event comes once the audio fed reaches its offset + latency_s."""
    wave = scene(12.0, 2)
    import soxr

    stereo = soxr.resample(np.stack([wave, wave * 0.5], axis=1), RATE, 44100).astype(np.float32)
    soundfile.write(tmp_path / "b.wav", stereo, 44100, subtype="FLOAT")
    rules = EventRules(median_windows=3, off_ratio=0.6, min_duration_s=0.3, min_gap_s=0.4)
    offline = file_events(str(tmp_path / "b.wav"), model, extractor, 0.5, rules, hop_s=0.25)
    offline_windows = list(file_window_scores(str(tmp_path / "b.wav"), model, extractor, hop_s=0.25))
    assert len(offline) >= 4 and len({e.label for e in offline}) >= 2  # the test means something

    stream = EventStream(model, extractor, 44100, threshold=0.5, rules=rules, hop_s=0.25)
    assert stream.latency_s == pytest.approx(1.0 + 0.25 + (1 + 2) * 0.25)  # window + hop + median + gap, in hops
    rng = np.random.default_rng(3)
    windows, events, position, early = [], [], 0, 0
    while position < len(stereo):
        size = int(rng.choice([1, 7, 300, 2048, 44100, 70000]))
        items = stream.feed(stereo[position : position + size])
        position += size
        windows += [item for item in items if isinstance(item, WindowScores)]
        for item in items:
            if not isinstance(item, WindowScores):
                assert stream.received_s <= item.offset + stream.latency_s + size / 44100  # this chunk brought it
                events.append(item)
                early += 1
    items = stream.close()
    windows += [item for item in items if isinstance(item, WindowScores)]
    events += [item for item in items if not isinstance(item, WindowScores)]
    assert [(w.start, w.end) for w in windows] == [(w.start, w.end) for w in offline_windows]
    np.testing.assert_allclose([w.scores for w in windows], [w.scores for w in offline_windows], atol=1e-5)
    streamed = sorted(events, key=lambda e: (e.onset, e.label, e.offset))
    assert [(e.label, e.onset, e.offset) for e in streamed] == [(e.label, e.onset, e.offset) for e in offline]
    np.testing.assert_allclose([e.score for e in streamed], [e.score for e in offline], atol=1e-5)
    assert early >= 2  # events came while audio was still arriving, not all at the end


def test_the_stream_refuses_what_it_cannot_use(model, extractor):
    stream = EventStream(model, extractor, 16000, threshold=0.5)
    with pytest.raises(ValueError, match="float samples"):
        stream.feed(np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match="NaN or inf"):
        stream.feed(np.full(10, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="no calibrated thresholds"):
        EventStream(model, extractor, 16000)
    with pytest.raises(ValueError, match="sampling_rate must be a positive whole number"):
        EventStream(model, extractor, 44100.5, threshold=0.5)


def test_a_parent_is_never_less_likely_than_its_child(model, ontology):
    hierarchy = LabelHierarchy.for_model(model.config, ontology)
    scores = np.random.default_rng(4).random((20, len(NAMES)))
    nodes = hierarchy.node_scores(scores)
    column = {mid: n for n, mid in enumerate(hierarchy.node_mids)}
    for child in hierarchy.node_mids:
        for parent in ontology.nodes[child].parents:
            if parent in column:
                assert (nodes[:, column[parent]] >= nodes[:, column[child]]).all()
    for c, mid in enumerate(model.config.label_mids):  # a class keeps at least its own score
        assert (nodes[:, column[mid]] >= scores[:, c]).all()
    dog, cat = NAMES.index("Dog"), NAMES.index("Cat")
    domestic = column[ontology.nodes[model.config.label_mids[dog]].parents[0]]
    np.testing.assert_array_equal(nodes[:, domestic], scores[:, [dog, NAMES.index("Bark"), cat]].max(axis=1))
    level0 = [hierarchy.node_names[n] for n in hierarchy.level_nodes(0)]
    assert {"Animal", "Music", "Sounds of things", "Human sounds"} == set(level0)
    level1 = [hierarchy.node_names[n] for n in hierarchy.level_nodes(1)]
    assert {"Domestic animals", "Vehicle", "Musical instrument", "Music"} <= set(level1)  # Music is top-level itself
    with pytest.raises(ValueError, match="level must be between 0"):
        hierarchy.level_nodes(9)
    # A coarse tag is on when one of its classes is: its threshold is its classes' lowest.
    thresholds = np.array([0.9, 0.8, 0.3, 0.7, 0.5, 0.5, 0.6])
    tags = node_tags(hierarchy, scores[0], hierarchy.level_nodes(0), thresholds)
    animal = hierarchy.node_mids.index("/m/0jbk")
    assert hierarchy.node_thresholds(thresholds)[animal] == 0.3
    assert ("Animal" in [t["label"] for t in tags]) == (scores[0, [1, 2, 3]].max() >= 0.3)


def test_coarse_events_follow_the_best_class(model, extractor, tmp_path):
    wave = scene(6.0, 5)
    soundfile.write(tmp_path / "c.wav", wave, RATE, subtype="FLOAT")
    coarse = file_events(str(tmp_path / "c.wav"), model, extractor, 0.5, hop_s=0.5, level=0)
    fine = file_events(str(tmp_path / "c.wav"), model, extractor, 0.5, hop_s=0.5)
    assert {e.label for e in coarse} <= {"Animal", "Music", "Sounds of things", "Human sounds"} and coarse
    windows = list(file_window_scores(str(tmp_path / "c.wav"), model, extractor, hop_s=0.5))
    animal = [NAMES.index(n) for n in ("Dog", "Bark", "Cat")]
    on = [w for w in windows if w.scores[animal].max() >= 0.5]
    assert bool(on) == any(e.label == "Animal" for e in coarse)
    assert any(e.label in ("Dog", "Bark", "Cat") for e in fine) == any(e.label == "Animal" for e in coarse)


def test_spa_tag_decisions(model, extractor, tmp_path, capsys):
    folder = tmp_path / "model"
    model.config.thresholds = [0.3] * len(NAMES)
    try:
        model.save_pretrained(folder)
    finally:
        model.config.thresholds = None
    extractor.save_pretrained(folder)
    soundfile.write(tmp_path / "d.wav", scene(5.0, 6), RATE, subtype="FLOAT")
    argv = [str(tmp_path / "d.wav"), "--model", str(folder), "--json", "--threshold", "auto", "--ancestors",
            "--level", "0", "--events", "--events-dir", str(tmp_path / "events"), "--event-hop", "0.25",
            "--median", "3"]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labels"] and all(item["score"] >= item["threshold"] == 0.3 for item in result["labels"])
    listed = {item["label"] for item in result["labels"]}
    assert result["ancestors"] and all(item["label"] not in listed for item in result["ancestors"])
    assert result["level_0"] and result["events"]
    rules = EventRules(median_windows=3)
    expected = file_events(str(tmp_path / "d.wav"), model, extractor, 0.3, rules, 0.25, level=0)  # --level: coarse
    assert [(e["label"], e["onset"], e["offset"]) for e in result["events"]] == [
        (e.label, e.onset, e.offset) for e in expected
    ]
    tsv = (tmp_path / "events" / "d.wav.events.tsv").read_text().splitlines()
    assert tsv[0] == f"{expected[0].onset:.3f}\t{expected[0].offset:.3f}\t{expected[0].label}"
    saved = json.loads((tmp_path / "events" / "d.wav.events.json").read_text())
    assert saved["settings"]["rules"]["median_windows"] == 3 and len(saved["events"]) == len(expected)
    # Text output, and the errors that name the problem.
    assert cli.main([str(tmp_path / "d.wav"), "--model", str(folder), "--threshold", "0.99", "--level", "1"]) == 0
    printed = capsys.readouterr().out
    assert "classes at or above their threshold (0.99):" in printed and "  ontology level 1:\n" in printed
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "d.wav"), "--model", str(folder), "--level", "12"])
    assert "level must be between 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "d.wav"), "--model", str(folder), "--events-dir", str(tmp_path)])
    assert "--events-dir needs --events" in capsys.readouterr().err


def test_window_probabilities_are_sigmoid_logits(model, extractor):
    wave = scene(1.0, 7)
    with torch.no_grad():
        expected = model(torch.from_numpy(wave)[None]).logits.sigmoid().numpy()
    np.testing.assert_allclose(window_probabilities(model, extractor, [wave]), expected, atol=1e-6)
