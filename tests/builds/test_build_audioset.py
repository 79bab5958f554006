"""recipes/build_audioset.py and modeling_spa.builds.shards / segments: CSVs, clip matching, layout, report, resume."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from training_runs import load_recipe, run

from modeling_spa.builds.audioset import ClipIndex, Segment, SegmentsError, read_segments
from modeling_spa.builds.shards import DATA_DIR, render_dataset_card
from modeling_spa.data import decode_audio, load_audioset

REPO = Path(__file__).resolve().parents[2]
HEADER = "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3\n"
HEADER += "# YTID, start_seconds, end_seconds, positive_labels\n"
# (ytid, start, frequency of its tone, file name or None (missing), format, rate, channels)
CLIPS = [
    ("AAAAAAAAAA1", 30.0, 440, "AAAAAAAAAA1.wav", "WAV", 44100, 2),
    ("BBBB_BBBB-2", 0.0, 660, "BBBB_BBBB-2_0.000_10.000.flac", "FLAC", 48000, 2),
    ("CCCCCCCCCC3", 120.0, 550, "sub/CCCCCCCCCC3_120000_130000.ogg", "OGG", 48000, 1),
    ("DDDDDDDDDD4", 5.0, 330, "YDDDDDDDDDD4.mp3", "MP3", 44100, 2),
    ("EEEEEEEEEE5", 10.0, 0, None, None, 0, 0),  # missing: the video is gone
    ("FFFFFFFFFF6", 20.0, 0, "FFFFFFFFFF6_20.wav", "CORRUPT", 0, 0),
    ("GGGGGGGGGG7", 40.0, 770, "GGGGGGGGGG7_40-50.wav", "WAV", 32000, 1),
]
EVAL = [("HHHHHHHHHH8", 30.0, 880, "HHHHHHHHHH8.flac", "FLAC", 44100, 2)]
DURATION_S = 1.0


def csv_text(clips, mids) -> str:
    lines = [f'{ytid}, {start:.3f}, {start + 10:.3f}, "{",".join(mids[i % 2])}"' for i, (ytid, start, *_) in
             enumerate(clips)]  # fmt: skip
    return HEADER + "\n".join(lines) + "\n"


def write_clip(path: Path, fmt: str, rate: int, channels: int, frequency: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "CORRUPT":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is no audio")
        return
    t = np.arange(int(DURATION_S * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * frequency * t)
    samples = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    soundfile.write(path, samples.astype(np.float32), rate, format=fmt)


@pytest.fixture(scope="module")
def release(tmp_path_factory, mid_of):
    """Segment CSVs of the balanced config and a clip folder: four formats, rates 32/44.1/48 kHz, one missing clip,
    one corrupt file, a downloader's side file."""
    root = tmp_path_factory.mktemp("release")
    mids = [[mid_of["Speech"], mid_of["Dog"]], [mid_of["Music"]]]
    (root / "csv").mkdir()
    (root / "csv" / "balanced_train_segments.csv").write_text(csv_text(CLIPS, mids))
    (root / "csv" / "eval_segments.csv").write_text(csv_text(EVAL, mids))
    for _, _, frequency, name, fmt, rate, channels in CLIPS + EVAL:
        if name:
            write_clip(root / "clips" / name, fmt, rate, channels, frequency)
    (root / "clips" / "AAAAAAAAAA1.info.json").write_text("{}")
    return root, mids


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])


def test_build_layout_report_and_card(release, tmp_path, ontology):
    root, mids = release
    build = load_recipe("build_audioset").build_audioset
    result = build(root / "csv", root / "clips", tmp_path / "out", clips_per_shard=3, progress=False,
                   ontology=ontology)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out" / DATA_DIR).iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet"]  # fmt: skip
    train = load_audioset(str(tmp_path / "out"), "train")
    assert train["video_id"] == ["AAAAAAAAAA1", "BBBB_BBBB-2", "CCCCCCCCCC3", "DDDDDDDDDD4", "GGGGGGGGGG7"]
    assert train[0]["labels"] == mids[0] and train[0]["human_labels"] == ["Speech", "Dog"]
    assert train[1]["human_labels"] == ["Music"]
    for row, (_, _, frequency, *_) in zip(train, [c for c in CLIPS if c[3] and c[4] != "CORRUPT"], strict=True):
        wave, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        info = soundfile.info(io.BytesIO(row["audio"]["bytes"]))
        assert (rate, info.channels, info.format, info.subtype) == (32000, 1, "FLAC", "PCM_16")
        assert abs(len(wave) - DURATION_S * 32000) <= 2  # resampled once, whatever the file's rate
        assert abs(dominant_frequency(wave, rate) - frequency) < 3
        assert decode_audio(row["audio"], 32000, row["video_id"]).shape == wave.shape
    assert load_audioset(str(tmp_path / "out"), "test")["video_id"] == ["HHHHHHHHHH8"]

    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report == result.report
    train_report = report["splits"]["train"]
    assert (train_report["planned"], train_report["written"]) == (7, 5)
    assert train_report["skipped"] == {"missing": 1, "unreadable": 1}
    missing, unreadable = sorted(train_report["skips"], key=lambda s: s["kind"])
    assert missing["video_id"] == "EEEEEEEEEE5"
    assert unreadable["video_id"] == "FFFFFFFFFF6" and unreadable["file"].endswith("FFFFFFFFFF6_20.wav")
    assert unreadable["reason"]
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert len(classes["mids"]) == 527 and classes["mids"][0] == ontology.label_mids[0]
    card = (tmp_path / "out" / "README.md").read_text()
    assert (
        "pretty_name: AudioSet (balanced, 32 kHz FLAC)" in card
        and "| train | 5 | 7 | 1 missing, 1 unreadable |" in card
    )


def copy_clips(source: Path, target: Path) -> Path:
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


def test_rebuild_does_nothing_and_a_new_clip_redoes_only_its_shard(release, tmp_path, ontology):
    root, _ = release
    clips = copy_clips(root / "clips", tmp_path / "clips")
    build = load_recipe("build_audioset").build_audioset
    first = build(root / "csv", clips, tmp_path / "out", clips_per_shard=3, progress=False, ontology=ontology)
    again = build(root / "csv", clips, tmp_path / "out", clips_per_shard=3, progress=False, ontology=ontology)
    assert len(first.written) == 4 and again.written == [] and len(again.kept) == 4  # nothing to do twice
    write_clip(clips / "EEEEEEEEEE5.wav", "WAV", 44100, 1, 500)  # the missing clip turns up
    more = build(root / "csv", clips, tmp_path / "out", clips_per_shard=3, progress=False, ontology=ontology)
    assert more.written == ["train-00001-of-00003.parquet"]
    assert more.report["splits"]["train"]["written"] == 6
    assert more.report["splits"]["train"]["skipped"] == {"unreadable": 1}


def test_segment_csv_errors_name_the_line(tmp_path, mid_of):
    known = {mid_of["Speech"]: "Speech"}
    path = tmp_path / "eval_segments.csv"
    path.write_text(HEADER + f'AAAAAAAAAA1, 0.000, 10.000, "{mid_of["Speech"]}"\nBBBBBBBBBB2, 0.000\n')
    with pytest.raises(SegmentsError, match=r"eval_segments.csv:5: expected 4 fields"):
        read_segments(path, known)
    path.write_text(HEADER + 'AAAAAAAAAA1, 0.000, 10.000, "/m/09x0r,/m/nothing"\n')
    with pytest.raises(SegmentsError, match=r"eval_segments.csv:4: segment AAAAAAAAAA1 .*\['/m/nothing'\]"):
        read_segments(path, known)
    path.write_text(HEADER + 'AAAAAAAAAA1, ten, 20.000, "/m/09x0r"\n')
    with pytest.raises(SegmentsError, match=r":4: start and end must be numbers"):
        read_segments(path, known)
    path.write_text(HEADER + 'AAAAAAAAAA1, 0.000, 10.000, "/m/09x0r"\n')
    assert read_segments(path, known) == [Segment("AAAAAAAAAA1", 0.0, 10.0, ("/m/09x0r",), "eval_segments.csv:4")]


def test_bad_segment_csvs_are_one_error_line_from_the_command(tmp_path, mid_of):
    """An unknown mid (CSVs from another release) and a missing CSV: the message alone, no traceback."""
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "balanced_train_segments.csv").write_text(HEADER + 'AAAAAAAAAA1, 0.000, 10.000, "/m/nothing"\n')
    command = [sys.executable, str(REPO / "recipes" / "build_audioset.py"), "--csv-dir", str(csv_dir),
               "--clips", str(tmp_path), "--output", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    done = run(command, REPO, timeout=120)
    unknown = "segment AAAAAAAAAA1 has label(s) ['/m/nothing'] that are not AudioSet labels"
    assert (done.returncode, done.stderr) == (1, f"error: balanced_train_segments.csv:4: {unknown}\n")
    (csv_dir / "balanced_train_segments.csv").write_text(HEADER + f'AAAAAAAAAA1, 0.000, 10.000, "{mid_of["Dog"]}"\n')
    done = run(command, REPO, timeout=120)
    expected = f"error: {csv_dir}: no eval_segments.csv (the balanced config's test split)\n"
    assert (done.returncode, done.stderr) == (1, expected)
    assert not (tmp_path / "out").exists()


def test_clip_names_match_their_segment(tmp_path):
    names = ["ab_cd-efghi_30.000_40.000.wav", "ab_cd-efghi_50.flac", "Yxxxxxxxxxxx.mp3", "Kkkkkkkkkkk_30000_40000.ogg",
             "Kkkkkkkkkkk.wav", "short.wav", "ab_cd-efghi_30.wav.part", "Kkkkkkkkkkk.info.json"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"")
    index = ClipIndex.scan(tmp_path)

    def found(ytid, start):
        return [Path(p).name for p in index.find(Segment(ytid, start, start + 10, ("x",), "t"))]

    assert found("ab_cd-efghi", 30) == ["ab_cd-efghi_30.000_40.000.wav"]
    assert found("ab_cd-efghi", 50) == ["ab_cd-efghi_50.flac"]
    assert found("ab_cd-efghi", 70) == []  # the files name other segments of the video
    assert found("xxxxxxxxxxx", 0) == ["Yxxxxxxxxxxx.mp3"]  # PANNs' Y prefix
    assert found("Kkkkkkkkkkk", 30) == ["Kkkkkkkkkkk_30000_40000.ogg", "Kkkkkkkkkkk.wav"]  # milliseconds; timed first


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_bytes_with_any_worker_count(release, tmp_path, ontology):
    """SIGKILL after the first shard (the build then blocks on a FIFO standing in for a slow clip), rerun with two
    worker processes: the first shard is kept as it was, and the result equals an uninterrupted one-worker build
    byte for byte."""
    root, _ = release
    clips = copy_clips(root / "clips", tmp_path / "clips")
    slow = clips / "sub" / "CCCCCCCCCC3_120000_130000.ogg"  # the third clip: in the second shard of two clips
    real = slow.read_bytes()
    slow.unlink()
    os.mkfifo(slow)
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "recipes" / "build_audioset.py"), "--csv-dir", str(root / "csv"),
               "--clips", str(clips), "--output", str(out), "--clips-per-shard", "2", "--no-progress"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*command, "--workers", "1"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    records = out / ".build" / "shards"
    try:
        deadline = time.monotonic() + 120  # a bound on a hang, not a timing assertion
        while not (records.is_dir() and any(records.glob("*.json"))) and proc.poll() is None:
            assert time.monotonic() < deadline, "the build never finished its first shard"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (out / DATA_DIR).iterdir())
    assert done == ["train-00000-of-00004.parquet"]  # only complete shards are ever in data/
    first = (out / DATA_DIR / done[0]).stat()

    slow.unlink()
    slow.write_bytes(real)
    build = load_recipe("build_audioset").build_audioset
    resumed = build(root / "csv", clips, out, clips_per_shard=2, workers=2, progress=False, ontology=ontology)
    assert resumed.kept == done and len(resumed.written) == 4  # the 3 other train shards and the test shard
    assert (out / DATA_DIR / done[0]).stat().st_mtime_ns == first.st_mtime_ns  # not redone

    build(root / "csv", clips, tmp_path / "ref", clips_per_shard=2, workers=1, progress=False, ontology=ontology)
    names = sorted(p.name for p in (tmp_path / "ref" / DATA_DIR).iterdir())
    assert sorted(p.name for p in (out / DATA_DIR).iterdir()) == names and len(names) == 4  # one shard all skipped
    for name in names:
        assert (out / DATA_DIR / name).read_bytes() == (tmp_path / "ref" / DATA_DIR / name).read_bytes(), name
    assert len(load_audioset(str(out), "train")) == 5  # nothing duplicated


def test_push_build_uploads_a_dataset_repo_without_the_resume_record(monkeypatch, tmp_path):
    import huggingface_hub

    from modeling_spa.builds.shards import push_build

    calls = {}
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.update(repo=(repo_id, kw))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(upload=kw) or "https://hub/commit/3"
    )
    assert push_build(tmp_path, "org/audioset-32k") == "https://hub/commit/3"
    assert calls["repo"] == ("org/audioset-32k", {"private": False, "exist_ok": True, "repo_type": "dataset"})
    assert calls["upload"]["repo_type"] == "dataset" and calls["upload"]["folder_path"] == str(tmp_path)
    assert ".build/*" in calls["upload"]["ignore_patterns"]


def test_dataset_card_renders_from_the_packaged_template():
    report = {"splits": {"train": {"planned": 3, "written": 2, "shards": 1, "skipped": {"missing": 1}, "skips": []}}}
    card = render_dataset_card("Tiny", "A tiny build.", report, "cc0-1.0", "All CC0.", details="Details here.")
    assert card.startswith("---\n") and "license: cc0-1.0" in card and "size_categories:\n- n<1K" in card
    assert "| train | 2 | 3 | 1 missing |" in card and "Details here." in card and "All CC0." in card
