"""recipes/listening_study.py: the selection (precision at N, classes, clips), the page's data, the combination of the
raters' answers (majority, ties, agreement) and the consistency scores, against values worked out by hand."""

import csv
import io
import json
import re
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
from training_runs import load_recipe

from modeling_spa.analysis import listening
from modeling_spa.files import write_json

study = load_recipe("listening_study")

DOG, CAT, SPEECH = "/m/0bt9lr", "/m/01yrx", "/m/09x0r"
MIDS, NAMES = [DOG, CAT, SPEECH], ["Dog", "Cat", "Speech"]
CLIPS = [f"clip/{i}" for i in range(6)]  # a slash, as the real builds' ids have: files must not be named by id
# Scores chosen so that both models rank the same three clips first for Dog (clips 0-2) and for Cat (3-5): the items
# are then fixed (no draw), and the APs against the rater below can be worked out by hand (test_browser...).
SCORES_A = np.array(
    [[0.9, 0.05, 0.1], [0.8, 0.1, 0.1], [0.7, 0.15, 0.1], [0.1, 0.4, 0.1], [0.2, 0.5, 0.1], [0.3, 0.6, 0.1]]
)
SCORES_B = np.array(
    [[0.6, 0.01, 0.2], [0.95, 0.02, 0.2], [0.85, 0.03, 0.2], [0.1, 0.9, 0.2], [0.2, 0.3, 0.2], [0.3, 0.2, 0.2]]
)
# Dataset labels: Dog on clips 0 and 1, Cat on 3 and 5; Speech nowhere (so never a candidate class).
LABELS = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0]])


def wav(frequency: float, rate: int = 32000, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * frequency * t), rate, format="FLAC")
    return buffer.getvalue()


def write_score_folder(folder: Path, scores: np.ndarray, labels: np.ndarray, clips=CLIPS, mids=MIDS, names=NAMES):
    """What recipes/evaluate.py --save_scores writes."""
    folder.mkdir(parents=True)
    np.save(folder / "scores.npy", scores.astype(np.float32))
    np.save(folder / "labels.npy", labels.astype(np.uint8))
    (folder / "clip_ids.json").write_text(json.dumps(clips))
    with open(folder / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "mid", "name", "ap", "positives"])
        writer.writerows([i, mid, name, "", 0] for i, (mid, name) in enumerate(zip(mids, names, strict=True)))
    return folder


def write_dataset(folder: Path) -> Path:
    """The six clips as an AudioSet-format build (32 kHz FLAC: the study re-encodes them at 16 kHz)."""
    rows = {
        "video_id": CLIPS,
        "audio": [{"bytes": wav(220.0 * (i + 1)), "path": None} for i in range(len(CLIPS))],
        "labels": [[m for m, on in zip(MIDS, row, strict=True) if on] for row in LABELS],
    }
    data = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"test": data}).save_to_disk(str(folder))
    return folder


def make_study(root: Path, classes: int = 2, clips_per_class: int = 3, seed: int = 0) -> Path:
    """select + page on the six clips: the two models' score folders, then the study folder."""
    a = write_score_folder(root / "eval_a", SCORES_A, LABELS)
    b = write_score_folder(root / "eval_b", SCORES_B, LABELS)
    dataset = write_dataset(root / "data")
    out = root / "study"
    study.main(["select", "--scores_a", str(a), "--scores_b", str(b), "--name_a", "baseline", "--name_b", "SPA",
                "--dataset", str(dataset), "--split", "test", "--classes", str(classes),
                "--clips_per_class", str(clips_per_class), "--seed", str(seed), "--output", str(out)])  # fmt: skip
    study.main(["page", str(out)])
    return out


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, shared_audioset):
    return make_study(tmp_path_factory.mktemp("listening"))


# ---------------------------------------------------------------------------------------------------- selection


def test_precision_at_n_by_hand_with_ties_to_the_earlier_clip():
    scores = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.7], [0.2, 0.7]])
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 1]])
    # Class 0, N=2: clips 0 (0.9) and 1 (0.5, before clip 2's equal 0.5): positives 0 + 1 -> 1/2.
    # Class 1, N=2: clips 2 and 3 (0.7 each): positives 1 + 1 -> 1.
    np.testing.assert_allclose(listening.precision_at_n(scores, labels, 2), [0.5, 1.0])
    # N=3: class 0 takes clips 0, 1, 2 -> 1/3; class 1 takes 2, 3 and then 1 (0.5) -> 2/3.
    np.testing.assert_allclose(listening.precision_at_n(scores, labels, 3), [1 / 3, 2 / 3])
    # More than the clips: all of them.
    np.testing.assert_allclose(listening.precision_at_n(scores, labels, 10), [0.5, 0.75])


def test_classes_by_largest_absolute_difference_with_a_positive_and_ties_by_class_order():
    a = np.array([0.1, 0.5, 0.9, 0.0, 0.2])
    b = np.array([0.4, 0.2, 0.9, 0.0, 0.9])
    positives = np.array([3, 2, 5, 0, 0])  # class 4 (difference 0.7) has no positive: never a candidate
    assert listening.choose_classes(a, b, positives, 2) == [0, 1]  # |0.3| and |0.3|: a tie, kept in class order
    assert listening.choose_classes(a, b, positives, 5) == [0, 1, 2]


def test_clips_are_the_union_of_both_top_n_drawn_with_a_seed_per_class():
    scores_a = np.array([0.9, 0.8, 0.7, 0.1, 0.0, 0.0])
    scores_b = np.array([0.0, 0.1, 0.9, 0.8, 0.7, 0.0])
    pool = {0, 1, 2, 3, 4}  # top 3 of a: 0, 1, 2; of b: 2, 3, 4
    picked = listening.choose_clips(scores_a, scores_b, 3, seed=0, class_index=7)
    assert len(picked) == 3 and set(picked) <= pool and picked == sorted(picked)
    assert picked == listening.choose_clips(scores_a, scores_b, 3, seed=0, class_index=7)
    draws = {tuple(listening.choose_clips(scores_a, scores_b, 3, seed=s, class_index=7)) for s in range(20)}
    assert len(draws) > 1  # the seed matters
    # The same top sets: no draw, exactly them.
    assert listening.choose_clips(scores_a, scores_a, 3, seed=5, class_index=0) == [0, 1, 2]


def test_align_reorders_clips_and_classes_and_refuses_other_splits(tmp_path):
    a = listening.read_scores(write_score_folder(tmp_path / "a", SCORES_A, LABELS))
    order = [5, 4, 3, 2, 1, 0]
    b_folder = write_score_folder(tmp_path / "b", SCORES_B[order][:, ::-1], LABELS[order][:, ::-1],
                                  clips=[CLIPS[i] for i in order], mids=MIDS[::-1], names=NAMES[::-1])  # fmt: skip
    b = listening.align(a, listening.read_scores(b_folder))
    np.testing.assert_allclose(b.scores, SCORES_B.astype(np.float32))
    assert b.mids == MIDS and b.clip_ids == CLIPS
    other = write_score_folder(tmp_path / "c", SCORES_B, 1 - LABELS)
    with pytest.raises(listening.StudyError, match="different dataset labels"):
        listening.align(a, listening.read_scores(other))
    fewer = write_score_folder(tmp_path / "d", SCORES_B[:5], LABELS[:5], clips=CLIPS[:5])
    with pytest.raises(listening.StudyError, match="different clips"):
        listening.align(a, listening.read_scores(fewer))


def test_select_writes_the_study_folder(small_study):
    manifest = json.loads((small_study / "manifest.json").read_text())
    scores = json.loads((small_study / "scores.json").read_text())
    labels = json.loads((small_study / "labels.json").read_text())
    items = manifest["items"]
    # Speech has no positive: Dog and Cat are studied (difference 0 for both, so in class order), three clips each.
    assert [(item["mid"], item["clip_id"]) for item in items] == [(DOG, c) for c in CLIPS[:3]] + [
        (CAT, c) for c in CLIPS[3:]
    ]
    assert items[0]["path"] == "Animal > Domestic animals > Dog" and items[0]["description"]
    assert scores["items"]["i0001"] == {"a": pytest.approx(0.9), "b": pytest.approx(0.6)}
    assert [labels["items"][item["item_id"]] for item in items] == [1, 1, 0, 1, 0, 1]
    assert scores["study_id"] == labels["study_id"] == manifest["study_id"]
    assert scores["models"]["a"]["name"] == "baseline" and scores["models"]["b"]["name"] == "SPA"
    # Clips: 16 kHz PCM16 WAV named by number, not by clip id.
    files = sorted(p.relative_to(small_study / "page").as_posix() for p in (small_study / "page").rglob("*.*"))
    assert files == ["clips/0001.wav", "clips/0002.wav", "clips/0003.wav", "clips/0004.wav", "clips/0005.wav",
                     "clips/0006.wav", "index.html"]  # fmt: skip
    info = soundfile.info(small_study / "page" / "clips" / "0002.wav")
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
    audio, _ = soundfile.read(small_study / "page" / "clips" / "0002.wav")
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)  # clip/1 is the 440 Hz tone, resampled, not garbled


def test_select_refuses_to_overwrite_a_study(small_study):
    with pytest.raises(listening.StudyError, match="already holds a study"):
        study.main(["select", "--scores_a", str(small_study.parent / "eval_a"), "--scores_b",
                    str(small_study.parent / "eval_b"), "--dataset", str(small_study.parent / "data"),
                    "--output", str(small_study)])  # fmt: skip


def test_the_page_never_references_scores_or_dataset_labels(small_study):
    page = (small_study / "page" / "index.html").read_text()
    data = json.loads(re.search(r'<script id="study-data" type="application/json">(.*?)</script>', page, re.S)[1])
    assert set(data) == {"study_id", "title", "items"}
    assert all(set(item) == {"item_id", "file", "name", "path", "description"} for item in data["items"])
    assert "scores.json" not in page and "labels.json" not in page and "manifest.json" not in page
    # Every file the page refers to is one of its clips (the clips' names come from the inlined data).
    assert re.findall(r'(?:src|href)="([^"#]+)"', page) == []
    assert {item["file"] for item in data["items"]} == {f"clips/{i:04d}.wav" for i in range(1, 7)}
    # The page folder holds nothing but the page and its clips.
    assert {p.name for p in (small_study / "page").iterdir()} == {"index.html", "clips"}
    # And no score value of either model appears in it.
    scores = json.loads((small_study / "scores.json").read_text())["items"]
    for values in scores.values():
        for value in values.values():
            assert repr(value) not in page


def test_the_page_escapes_script_endings_in_the_data():
    manifest = {"study_id": "s", "items": [{"item_id": "i1", "file": "clips/0001.wav", "name": "</script><b>",
                                            "path": "A > B", "description": ""}]}  # fmt: skip
    page = study.render_page(manifest, "T")
    assert page.count("</script>") == 2  # the two script elements' own ends only
    # "<!--<script" would make the parser skip the element's own "</script>" (the page then never runs): no "<" of
    # the data reaches the HTML, and the JSON still decodes to the text.
    manifest["items"][0]["name"] = "Study <!--<script> test"
    page = study.render_page(manifest, "T")
    raw = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', page, re.S)[1]
    assert "<" not in raw and json.loads(raw)["items"][0]["name"] == "Study <!--<script> test"


def test_overwrite_replaces_the_whole_study(small_study, tmp_path):
    folder = shutil.copytree(small_study, tmp_path / "study")  # the module's study stays as it is
    stale = folder / "results" / "table3.md"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text("old")
    (folder / "page" / "clips" / "9999.wav").write_bytes(b"old clip")
    study.main(["select", "--scores_a", str(small_study.parent / "eval_a"), "--scores_b",
                str(small_study.parent / "eval_b"), "--dataset", str(small_study.parent / "data"),
                "--output", str(folder), "--overwrite", "--seed", "1"])  # fmt: skip
    assert not stale.exists() and not (folder / "page" / "clips" / "9999.wav").exists()
    assert not (folder / "page" / "index.html").exists()  # the old page would map old items to new clips
    assert (folder / "manifest.json").is_file()


# ---------------------------------------------------------------------------------------------------- score


def test_majority_vote_and_ties_by_hand():
    yes5, yes1, no4, no2 = (True, 5), (True, 1), (False, 4), (False, 2)
    assert listening.majority([yes5, no4, yes1], "exclude") == 1  # 2 yes against 1 no
    assert listening.majority([no4, no2, yes5], "exclude") == 0  # 2 no against 1 yes, whatever the confidence
    assert listening.majority([yes1, no4], "exclude") is None  # 1-1: a tie is left out
    assert listening.majority([yes1, no4], "confidence") == 0  # 1-1; confidence 1 against 4: no
    assert listening.majority([yes5, no4], "confidence") == 1  # 5 against 4: yes
    assert listening.majority([yes5, yes1, no4, no2], "confidence") is None  # 2-2, and 6 against 6: still a tie
    assert listening.majority([], "confidence") is None


def answer_file(path: Path, study_id: str, rater: str, answers: dict, **extra) -> Path:
    answers = {item: {"present": p, "confidence": c} for item, (p, c) in answers.items()}
    data = {"format": "spa-listening-answers", "version": 1, "study_id": study_id, "rater_id": rater,
            "answers": answers, **extra}  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def hand_study(root: Path) -> Path:
    """Two classes of three items, written directly (no select): scores and labels as in the by-hand table below."""
    items = [{"item_id": f"i{k}", "clip_id": f"c{k}", "file": f"clips/{k:04d}.wav", "mid": DOG if k < 3 else CAT,
              "name": "Dog" if k < 3 else "Cat", "path": "", "description": ""} for k in range(6)]  # fmt: skip
    write_json(root / "manifest.json", {"format": "spa-listening-study", "study_id": "hand", "items": items})
    scores = {"i0": (0.9, 0.6), "i1": (0.8, 0.95), "i2": (0.7, 0.85), "i3": (0.4, 0.9), "i4": (0.5, 0.3),
              "i5": (0.6, 0.2)}  # fmt: skip
    models = {"a": {"name": "A"}, "b": {"name": "B"}}
    score_items = {k: {"a": a, "b": b} for k, (a, b) in scores.items()}
    write_json(root / "scores.json", {"study_id": "hand", "models": models, "items": score_items})
    labels = {"i0": 1, "i1": 1, "i2": 0, "i3": 1, "i4": 0, "i5": 1}
    write_json(root / "labels.json", {"study_id": "hand", "items": labels})
    return root


# Three raters. Majorities: i0 yes (3-0), i1 no (1-2), i2 yes (2-1), i3 yes (2-1), i4 no (0-3), i5: r3 did not
# answer it, r1 yes / r2 no -> a tie, left out. Dog: human (1, 0, 1); Cat: i3, i4 labelled, human (1, 0).
RATERS = {
    "r1": {"i0": (True, 5), "i1": (True, 2), "i2": (True, 4), "i3": (True, 3), "i4": (False, 5), "i5": (True, 1)},
    "r2": {"i0": (True, 4), "i1": (False, 3), "i2": (False, 2), "i3": (False, 4), "i4": (False, 5), "i5": (False, 4)},
    "r3": {"i0": (True, 3), "i1": (False, 4), "i2": (True, 3), "i3": (True, 5), "i4": (False, 4)},
}


def test_score_reproduces_table_3_by_hand(tmp_path):
    root = hand_study(tmp_path)
    files = [str(answer_file(tmp_path / f"{r}.json", "hand", r, a)) for r, a in RATERS.items()]
    result = study.main(["score", str(root), *files, "--allow_incomplete"])
    rows = result["rows"]
    # Dog, human (1, 0, 1) on i0, i1, i2.
    #   A scores (.9, .8, .7): ranks i0 (yes), i1 (no), i2 (yes) -> AP = (1/1 + 2/3) / 2 = 5/6
    #   B scores (.6, .95, .85): ranks i1 (no), i2 (yes), i0 (yes) -> AP = (1/2 + 2/3) / 2 = 7/12
    #   dataset labels (1, 1, 0): threshold 1 holds i0, i1 -> P 1/2 at R 1/2; then all -> P 2/3 at R 1:
    #   AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12
    # Cat, human (1, 0) on i3, i4 (i5 is a tie): A (.4, .5): i4 first -> AP = 1/2; B (.9, .3) -> AP = 1;
    #   dataset labels (1, 0) -> AP = 1.
    assert rows["a"]["per_class"] == {DOG: pytest.approx(5 / 6), CAT: pytest.approx(1 / 2)}
    assert rows["b"]["per_class"] == {DOG: pytest.approx(7 / 12), CAT: pytest.approx(1.0)}
    assert rows["dataset"]["per_class"] == {DOG: pytest.approx(7 / 12), CAT: pytest.approx(1.0)}
    assert rows["a"]["mean"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert rows["b"]["mean"] == pytest.approx((7 / 12 + 1) / 2)
    dog, cat = result["classes"]
    assert (dog["labelled"], dog["human_positives"], dog["ties"], dog["unanimous"]) == (3, 2, 0, 1)
    assert (cat["labelled"], cat["human_positives"], cat["ties"], cat["unanimous"]) == (2, 1, 1, 1)
    # Agreement: i0 3/3, i1 2/3, i2 2/3 -> 7/9; confidence i0 4, i1 3, i2 3 -> 10/3.
    assert dog["mean_agreement"] == pytest.approx(7 / 9) and dog["mean_confidence"] == pytest.approx(10 / 3)
    assert result["items"]["i5"] == {"yes": 1, "no": 1, "human": None, "agreement": 0.5, "mean_confidence": 2.5}
    assert result["incomplete_files"] == [{"file": files[2], "rater_id": "r3", "missing": 1}]
    markdown = (root / "results" / "table3.md").read_text()
    assert "| A | 0.833 | 0.500 | 0.667 |" in markdown and "| dataset labels | 0.583 | 1.000 | 0.792 |" in markdown
    assert "1 tie(s) left out" in markdown and "r3 (1 missing)" in markdown


def test_ties_broken_by_confidence(tmp_path):
    root = hand_study(tmp_path)
    files = [str(answer_file(tmp_path / f"{r}.json", "hand", r, a)) for r, a in RATERS.items()]
    result = study.main(["score", str(root), *files, "--allow_incomplete", "--ties", "confidence"])
    # i5: yes with confidence 1 against no with 4 -> no. Cat: human (1, 0, 0) on i3, i4, i5.
    #   A (.4, .5, .6): the positive is last -> AP = 1/3.
    assert result["items"]["i5"]["human"] == 0
    assert result["rows"]["a"]["per_class"][CAT] == pytest.approx(1 / 3)


def test_a_class_without_human_positive_has_no_ap_and_stays_out_of_the_mean(tmp_path):
    root = hand_study(tmp_path)
    everyone_no = {f"i{k}": (k < 3, 3) for k in range(6)}  # Cat: all no
    result = study.main(["score", str(root), str(answer_file(tmp_path / "r.json", "hand", "r", everyone_no))])
    assert result["rows"]["a"]["per_class"][CAT] is None
    assert result["rows"]["a"]["mean"] == pytest.approx(1.0)  # Dog: all yes -> AP 1 for any scores
    assert result["classes_without_ap"] == ["Cat"]
    assert "| A | 1.000 | n/a | 1.000 |" in (root / "results" / "table3.md").read_text()


def test_bad_answer_files_are_clear_errors_or_counted_exclusions(tmp_path):
    root = hand_study(tmp_path)
    full = {f"i{k}": (True, 3) for k in range(6)}
    good = answer_file(tmp_path / "good.json", "hand", "ok", full)
    other = answer_file(tmp_path / "other.json", "another-study", "x", full)
    unknown = answer_file(tmp_path / "unknown.json", "hand", "u", {**full, "i99": (True, 3)})
    values = answer_file(tmp_path / "values.json", "hand", "v", {**full, "i1": (True, 7)})
    presence = answer_file(tmp_path / "presence.json", "hand", "p", {**full, "i1": ("yes", 3)})
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{not json")
    twin_1 = answer_file(tmp_path / "twin1.json", "hand", "twin", full)
    twin_2 = answer_file(tmp_path / "twin2.json", "hand", "twin", full)
    bad = [other, unknown, values, presence, malformed, twin_1, twin_2]
    with pytest.raises(listening.StudyError) as caught:
        study.main(["score", str(root), str(good), *map(str, bad)])
    message = str(caught.value)
    for expected in ["answers for study 'another-study', not 'hand'", "1 item(s) not in this study (i99)",
                     "confidence must be an integer 1-5, got 7", "present must be true or false, got 'yes'",
                     "malformed.json: unreadable", "rater id 'twin' is in 2 files"]:  # fmt: skip
        assert expected in message
    result = study.main(["score", str(root), str(good), *map(str, bad), "--skip_invalid"])
    assert result["raters"] == ["ok"] and len(result["excluded_files"]) == 7
    assert "7 answer file(s) excluded" in (root / "results" / "table3.md").read_text()


def test_incomplete_files_fail_unless_allowed(tmp_path):
    root = hand_study(tmp_path)
    # i2 has a presence but no confidence: unanswered, as the page saves half answers as the rater goes.
    partial = answer_file(tmp_path / "p.json", "hand", "p", {"i0": (True, 3), "i1": (False, 2), "i2": (True, None)})
    with pytest.raises(listening.StudyError, match=r"rater 'p' answered 2 of 6 items"):
        study.main(["score", str(root), str(partial)])
    result = study.main(["score", str(root), str(partial), "--allow_incomplete"])
    assert result["incomplete_files"][0]["missing"] == 4
    assert result["classes"][0]["unanswered"] == 1 and result["classes"][1]["unanswered"] == 3
    with pytest.raises(listening.StudyError, match="No answer files"):
        listening.read_raters([], json.loads((root / "manifest.json").read_text()), False, False)


def test_an_answer_that_is_not_an_object_is_invalid_even_when_incomplete_files_are_allowed(tmp_path):
    root = hand_study(tmp_path)
    path = answer_file(tmp_path / "s.json", "hand", "s", {f"i{k}": (True, 3) for k in range(6)})
    data = json.loads(path.read_text())
    data["answers"] |= {"i1": "yes", "i2": None, "i3": [True, 3]}  # the page writes {present, confidence, ...}
    path.write_text(json.dumps(data))
    with pytest.raises(listening.StudyError) as caught:
        study.main(["score", str(root), str(path), "--allow_incomplete"])
    message = str(caught.value)
    assert f"{path}: item i1: " in message
    for item, value in (("i1", "'yes'"), ("i2", "None"), ("i3", "[True, 3]")):
        assert f"item {item}: an answer must be an object (present, confidence), got {value}" in message
    with pytest.raises(listening.StudyError, match="No valid answer file is left"):
        study.main(["score", str(root), str(path), "--allow_incomplete", "--skip_invalid"])
