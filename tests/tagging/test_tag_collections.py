"""Tagging collections (modeling_spa/tagging: sources, pipeline, tables, runs, embeddings; spa-tag, spa-embed) on real
recordings: a nested folder of the Debian packages' files in their own formats, rates and channel counts, with broken,
empty and too-short files among them.

- The pipeline (decoding workers, windows of many files in one batch) gives the one-file path's scores for every
  file, whatever the extractor pads to; failures are results with their reason, a crashed decoder included.
- spa-tag writes the same table as CSV, JSON lines and Parquet; a run killed midway (SIGKILL) and started again
  ends with the table of an uninterrupted run, each file once, and the output is readable at the kill.
- A 2-process `accelerate launch` over a datasets build writes the table of one process.
- spa-embed writes E_a and the pooled embedding per file and per window, equal to the model's outputs.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from conftest import REPO, free_port

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.cli.embed import main as embed_main
from modeling_spa.cli.tag import main as tag_main
from modeling_spa.data.audio_files import open_audio, read_all
from modeling_spa.files import cache_dir
from modeling_spa.frontend import frontend_preset
from modeling_spa.tagging import pipeline as pipeline_module
from modeling_spa.tagging.files import file_outputs, file_window_outputs
from modeling_spa.tagging.pipeline import tag_collection
from modeling_spa.tagging.sources import FileCollection, collect_files, folder_files, list_file_paths
from modeling_spa.waveforms import mix_to_mono, resample
from modeling_spa.windowing import window_starts

REAL_PACKAGES = cache_dir() / "real_sounds" / "extracted"
REAL_SOURCES = Path(os.environ.get("SPA_REAL_SOUNDS", REPO / "outputs/real_sounds/sources"))
LABELS = {0: "Dog", 1: "Cat", 2: "Speech"}
MIDS = ["/m/0bt9lr", "/m/01yrx", "/m/09x0r"]
BROKEN = {"broken.mp3", "empty.wav", "tiny.wav"}  # and the Debian package's own undecodable .ogg files


def tiny_model() -> SPAForAudioClassification:
    """The demo CNN at 16 kHz with 1 s windows, its statistics and heads randomised so that scores differ."""
    paths = ["Animal > Dog", "Animal > Cat", "Human sounds > Speech"]
    config = SPAConfig(backbone="demo_cnn", audio_config={"hidden_sizes": [4, 8], "num_mel_bins": 64},
                       frontend=frontend_preset("tiny"), projection_dim=8, window_length_s=1.0, id2label=LABELS,
                       label_mids=MIDS, label_paths=paths)  # fmt: skip
    model = SPAForAudioClassification(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.spa.backbone.named_buffers():
            if name.endswith("running_mean"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(folder)
    SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return SPAForAudioClassification.from_pretrained(model_dir).eval()


def pick_real_files() -> list[Path]:
    """One recording of each (format, rate, channels) in the packages, the longest, and the packages' .ogg files that
    are not audio libsndfile can decode (RIFF-wrapped Vorbis)."""
    if not REAL_PACKAGES.is_dir():
        pytest.skip(f"no real recordings under {REAL_PACKAGES}: build them (make real-sounds)")
    kinds, broken = {}, []
    for path in sorted(REAL_PACKAGES.rglob("*")):
        if path.suffix.lower() not in (".wav", ".mp3", ".ogg", ".flac", ".oga"):
            continue
        try:
            info = soundfile.info(path)
        except soundfile.LibsndfileError:
            broken.append(path)
            continue
        kind = (path.suffix.lower(), info.samplerate, info.channels)
        if kind not in kinds or info.duration > kinds[kind][0]:
            kinds[kind] = (info.duration, path)
    return [path for _, path in kinds.values()] + broken[:2]


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """Real recordings in nested folders (package/folder/name, spaces and all), a text file that is not audio, and
    a garbage MP3, an empty WAV and a WAV of 100 samples (shorter than one analysis window)."""
    root = tmp_path_factory.mktemp("real") / "collection"
    for path in pick_real_files():
        relative = path.relative_to(REAL_PACKAGES)
        target = root / relative.parts[0] / path.parent.name.replace("#", "_") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    odd = root / "odd" / "deeper"
    odd.mkdir(parents=True)
    (odd / "broken.mp3").write_bytes(b"ID3" + bytes(range(256)) * 8)
    (odd / "empty.wav").write_bytes(b"")
    soundfile.write(odd / "tiny.wav", np.zeros(100, dtype=np.float32), 16000)
    (root / "README.txt").write_text("not audio, and not matched by the default patterns\n")
    return root


def decoded(path) -> tuple[np.ndarray, int]:
    """A file decoded whole: (frames, channels) and its rate."""
    with open_audio(path) as sound:
        return read_all(sound, str(path)), sound.samplerate


def whole_clip(path, rate: int = 16000) -> np.ndarray:
    """A file decoded whole, mixed to mono and resampled at once: what the model sees as one clip."""
    samples, file_rate = decoded(path)
    return resample(mix_to_mono(samples), file_rate, rate)


# ---------------------------------------------------------------------------------------------------------------
# Sources


def test_folders_are_walked_with_include_patterns_and_list_files_are_relative_to_themselves(real_folder, tmp_path):
    found = folder_files(real_folder)
    assert found == sorted(found, key=lambda p: Path(p).relative_to(real_folder).parts)  # sorted, depth-first
    assert not any(p.endswith("README.txt") for p in found) and any(p.endswith(".oga") for p in found)
    assert {Path(p).suffix for p in folder_files(real_folder, ["*.FLAC"])} == {".flac"}
    assert [Path(p).name for p in folder_files(real_folder, ["odd/*/*.wav"])] == ["empty.wav", "tiny.wav"]
    (tmp_path / "list.txt").write_text(f"# a comment\n\nclips/a.wav\n{real_folder}/odd/deeper/tiny.wav\n")
    assert list_file_paths(tmp_path / "list.txt") == [
        str(tmp_path / "clips/a.wav"),
        f"{real_folder}/odd/deeper/tiny.wav",
    ]
    # A file named twice (directly and through its folder) is tagged once; a file named directly is kept whatever
    # its extension.
    collection = collect_files(
        [str(real_folder / "README.txt"), str(real_folder / "odd")], [str(tmp_path / "list.txt")]
    )
    assert collection.keys[0].endswith("README.txt") and len(collection.keys) == len(set(collection.keys)) == 5


# ---------------------------------------------------------------------------------------------------------------
# The pipeline against the one-file path


@pytest.mark.parametrize("max_length_s", [1.0, 0.5, 2.0, None])
def test_the_pipeline_gives_the_one_file_paths_scores_for_every_file(model, real_folder, max_length_s):
    # The extractor pads a batch to max(max_length_s, its longest window): at 0.5 s a file of 0.8 s is padded to
    # 0.8 s alone but would be padded to 1 s beside a full window, at 2.0 s every batch is windowed again by the
    # model. Windows that pad differently must not share a batch.
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=max_length_s)
    collection = collect_files([str(real_folder)])
    results = list(tag_collection(collection, model, extractor, batch_size=5, num_workers=2))
    assert sorted(r.index for r in results) == list(range(len(collection)))
    tagged = [r for r in results if r.error is None]
    assert len(tagged) >= 15 and {Path(r.key).suffix for r in tagged} == {".wav", ".mp3", ".ogg", ".flac", ".oga"}
    assert {r.file_sampling_rate for r in tagged} >= {8000, 11025, 22050, 44100, 48000, 96000}
    assert any(len(r.window_starts) > 10 for r in tagged) and any(r.duration_s < 1 for r in tagged)
    for result in tagged:
        outputs, weights = file_window_outputs(result.key, model, extractor)
        scores, audio_embeds = file_outputs(result.key, model, extractor)
        # Another batch composition rounds convolutions differently: float32 noise, nothing more.
        np.testing.assert_allclose(result.scores, scores, rtol=0, atol=2e-6, err_msg=result.key)
        np.testing.assert_allclose(result.audio_embeds, audio_embeds.numpy(), rtol=0, atol=2e-6)
        np.testing.assert_allclose(result.window_logits, outputs.logits.numpy(), rtol=0, atol=1e-5)
        assert result.window_samples.tolist() == weights
        samples, rate = decoded(result.key)
        assert result.duration_s == len(samples) / rate and result.channels == samples.shape[1]
        n = len(resample(mix_to_mono(samples), rate, 16000))
        assert result.window_starts.tolist() == window_starts(n, 16000, 16000)


def test_failures_are_results_with_their_reason(model, real_folder):
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    results = {Path(r.key).name: r for r in tag_collection(collect_files([str(real_folder)]), model, extractor)}
    failed = {name: r.error for name, r in results.items() if r.error is not None}
    assert BROKEN <= set(failed) and len(failed) == len(BROKEN) + 2  # two undecodable .ogg files of the packages
    assert failed["empty.wav"] == "empty file (0 bytes), not audio"
    assert failed["tiny.wav"].startswith("too short: 100 sample(s) at 16000 Hz")
    assert failed["broken.mp3"].startswith("not audio")
    assert all(r.scores is None for r in results.values() if r.error is not None)


class CrashingCollection(FileCollection):
    """Files whose decoder kills its process at one of them, as a crash in libsndfile would."""

    def __init__(self, paths, crash_at: str):
        super().__init__(paths)
        self.crash_at = crash_at

    def audio(self, index):
        if self.keys[index] == self.crash_at:
            os._exit(3)
        return super().audio(index)


def test_a_decoder_that_crashes_costs_its_file_only(model, real_folder):
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    paths = folder_files(real_folder, ["*.flac", "*.oga"])
    collection = CrashingCollection(paths, crash_at=paths[2])
    results = list(tag_collection(collection, model, extractor, num_workers=2, ordered=True))
    assert [r.key for r in results] == paths  # every file once, in order
    assert results[2].error == "the decoder crashed (its worker process ended with exit code 3)"
    assert all(r.error is None for i, r in enumerate(results) if i != 2)


def test_windows_of_many_files_share_a_batch(model, real_folder, monkeypatch):
    batches = []
    run = pipeline_module._Batcher.run

    def spy(self, length):
        batches.append([index for index, _, _ in self.pending[length]])
        return run(self, length)

    monkeypatch.setattr(pipeline_module._Batcher, "run", spy)
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    files = [p for p in folder_files(real_folder) if Path(p).name not in BROKEN and not p.endswith(".ogg")]
    results = list(tag_collection(FileCollection(files), model, extractor, batch_size=8, num_workers=0))
    # Full batches until the last one, across file boundaries: short files fill the batches of long ones.
    assert [len(batch) for batch in batches[:-1]] == [8] * (len(batches) - 1)
    assert sum(len(batch) for batch in batches) == sum(len(r.window_starts) for r in results)
    assert sum(len(set(batch)) > 1 for batch in batches) >= 5


def test_memory_stays_bounded_on_a_long_file(model, tmp_path):
    # 10 minutes of stereo 48 kHz FLAC: 230 MB of float32 decoded whole. In the main process (0 workers, so the
    # decoding is traced too) the pipeline holds a few windows and blocks.
    path, rate = tmp_path / "long.flac", 48000
    with soundfile.SoundFile(path, "w", rate, 2, format="FLAC", subtype="PCM_16") as sound:
        for start in range(0, 10 * 60 * rate, 10 * rate):
            block = np.zeros((10 * rate, 2), dtype=np.float32)
            block[:4800] = np.random.default_rng(start).uniform(-0.1, 0.1, (4800, 2))  # cheap FLAC: mostly silence
            sound.write(block)
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    tracemalloc.start()
    try:
        [result] = tag_collection(FileCollection([str(path)]), model, extractor, num_workers=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.window_starts) == 600 and result.duration_s == 600.0
    assert peak < 16e6, f"peak {peak / 1e6:.1f} MB"  # decoded whole: 230 MB


# ---------------------------------------------------------------------------------------------------------------
# spa-tag: tables


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def tables(model_dir, real_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    codes = {}
    for suffix in ("csv", "jsonl", "parquet"):
        codes[suffix] = tag_main([str(real_folder), "--model", str(model_dir), "--output", str(out / f"tags.{suffix}"),
                                  "--top-k", "2", "--all-scores", "--label-info", "--no-progress"])  # fmt: skip
    return out, codes


def test_one_table_in_every_format_with_a_row_per_file(tables, real_folder, model):
    out, codes = tables
    assert codes == {"csv": 1, "jsonl": 1, "parquet": 1}  # some files could not be read
    frames = {suffix: read_table(out / f"tags.{suffix}") for suffix in ("csv", "jsonl", "parquet")}
    expected = collect_files([str(real_folder)]).keys
    for frame in frames.values():
        assert frame["file"].tolist() == expected  # in the collection's order
        assert list(frame.columns[:10]) == ["file", "duration_s", "sample_rate", "channels", "windows", "error",
                                            "label_1", "score_1", "mid_1", "path_1"]  # fmt: skip
        assert [c for c in frame.columns if c.startswith("score:")] == ["score:Dog", "score:Cat", "score:Speech"]
    csv, jsonl, parquet = frames["csv"], frames["jsonl"], frames["parquet"]
    pd.testing.assert_frame_equal(csv, jsonl, check_dtype=False)
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)
    # The scores read back exactly as the pipeline computed them (float32 values), and rank the labels.
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    ok = parquet[parquet["error"].isna()]
    first = ok.iloc[0]
    scores = file_outputs(first["file"], model, extractor)[0]
    np.testing.assert_allclose(first[["score:Dog", "score:Cat", "score:Speech"]].astype(float), scores, atol=2e-6)
    assert first["label_1"] == LABELS[int(np.argmax(scores))] and first["mid_1"] == MIDS[int(np.argmax(scores))]
    assert (ok["score_1"] >= ok["score_2"]).all()
    failed = parquet[parquet["error"].notna()]
    assert {Path(f).name for f in failed["file"]} >= BROKEN and failed["label_1"].isna().all()


def test_include_patterns_and_a_list_file(model_dir, real_folder, tmp_path, capsys):
    listed = folder_files(real_folder, ["*.mp3"])
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    code = tag_main([str(real_folder), "--include", "*.flac", "--list", str(tmp_path / "list.txt"), "--model",
                     str(model_dir), "--output", str(tmp_path / "t.csv"), "--no-progress"])  # fmt: skip
    frame = read_table(tmp_path / "t.csv")
    assert frame["file"].tolist() == folder_files(real_folder, ["*.flac"]) + listed
    assert code == 1 and "broken.mp3: not audio" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["agkphysics/AudioSet", "no/such-folder"])
def test_a_dataset_that_cannot_be_reached_is_a_usage_error(model_dir, tmp_path, dataset, capsys, monkeypatch):
    """Offline (HF_HUB_OFFLINE=1, as here), a Hub id or a missing folder is one line naming it, not a traceback."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        tag_main(["--dataset", dataset, "--split", "test", "--model", str(model_dir), "--output", "t.csv"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"spa-tag: error: --dataset {dataset}: " in err and "Traceback" not in err
    assert not (tmp_path / "t.csv").exists()


def test_printing_without_an_output_in_the_order_given(model_dir, real_folder, capsys):
    files = folder_files(real_folder, ["*.oga"])[:3]
    assert tag_main([*files, "--model", str(model_dir), "--json", "--top-k", "1"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["file"] for p in printed] == files and all(len(p["labels"]) == 1 for p in printed)


def test_a_model_saved_without_its_extractor_tags_the_same(model_dir, real_folder, tmp_path, capsys):
    """`model.save_pretrained` alone leaves no preprocessor_config.json: spa-tag builds the extractor the config implies
    (`SPAFeatureExtractor.for_model`), says so in one line, and gives the scores of the folder with the extractor."""
    alone = tmp_path / "model_alone"
    alone.mkdir()
    for path in model_dir.iterdir():
        if path.name != "preprocessor_config.json":
            shutil.copy(path, alone / path.name)
    files = folder_files(real_folder, ["*.oga"])[:3]
    printed = {}
    for folder in (model_dir, alone):
        assert tag_main([*files, "--model", str(folder), "--json", "--top-k", "3"]) == 0
        captured = capsys.readouterr()
        printed[folder] = [json.loads(line) for line in captured.out.splitlines()]
        said = "has no preprocessor_config.json: using the extractor its config implies (16000 Hz" in captured.err
        assert said == (folder == alone)
    for ours, theirs in zip(printed[alone], printed[model_dir], strict=True):
        assert [label["label"] for label in ours["labels"]] == [label["label"] for label in theirs["labels"]]
        np.testing.assert_allclose([label["score"] for label in ours["labels"]],
                                   [label["score"] for label in theirs["labels"]], rtol=0, atol=1e-5)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# A run killed midway, started again


def rows_written(path: Path) -> int:
    """Rows of the output and its parts, read as a user would, at any moment."""
    paths = [path] + sorted(path.with_name(path.name + ".parts").glob("[!.]*"))  # not a temporary file
    return sum(len(read_table(p)) for p in paths if p.exists() and p.stat().st_size > 0)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_a_killed_run_started_again_continues_where_it_stopped(model_dir, real_folder, tmp_path, suffix, capsys):
    # A FIFO in the middle of the list stops the run there deterministically: its worker blocks opening it, with
    # every file before it tagged. The run is killed (SIGKILL, workers included), the FIFO becomes a real file,
    # and the same command finishes the table.
    files = folder_files(real_folder)
    stall = tmp_path / "stall.flac"
    os.mkfifo(stall)
    before = 8
    (tmp_path / "list.txt").write_text("\n".join([*files[:before], str(stall), *files[before:]]) + "\n")
    output = tmp_path / f"tags.{suffix}"
    args = ["--list", str(tmp_path / "list.txt"), "--model", str(model_dir), "--output", str(output), "--top-k", "2",
            "--workers", "1", "--no-progress"]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "modeling_spa.cli.tag", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while rows_written(output) < before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert rows_written(output) == before  # readable at the kill, the files before the FIFO all there
    os.remove(stall)
    shutil.copy(folder_files(real_folder, ["*.flac"])[0], stall)
    capsys.readouterr()
    assert tag_main(args) == 1
    summary = re.search(r"tagged (\d+) file\(s\).*; (\d+) failed; (\d+) already in", capsys.readouterr().err)
    tagged, failed, skipped = map(int, summary.groups())
    assert skipped == before and tagged + failed == len(files) + 1 - before  # none twice, none lost
    assert not output.with_name(output.name + ".parts").exists()
    resumed = read_table(output)
    tag_main([*args[:5], str(tmp_path / f"whole.{suffix}"), *args[6:]])
    whole = read_table(tmp_path / f"whole.{suffix}")
    assert resumed["file"].tolist() == whole["file"].tolist() == [*files[:before], str(stall), *files[before:]]
    pd.testing.assert_frame_equal(resumed, whole, check_exact=False, rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------------------------
# Two processes


@pytest.mark.slow
def test_two_processes_write_the_table_of_one(model_dir, tmp_path):
    if not (REAL_SOURCES / "data").is_dir():
        pytest.skip(f"no real-recording build at {REAL_SOURCES}: build it (recipes/build_real_sounds.py)")
    args = ["--dataset", str(REAL_SOURCES), "--split", "test", "--model", str(model_dir), "--top-k", "3",
            "--all-scores", "--no-progress"]  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", free_port(), "-m", "modeling_spa.cli.tag"]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [*launch, *args, "--output", str(tmp_path / "two.parquet")]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # no orphan rank survives a failed test
        _, stderr = proc.communicate()
        pytest.fail(f"the 2-process run did not finish; its output ends:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert tag_main([*args, "--output", str(tmp_path / "one.parquet")]) == 0
    two, one = pd.read_parquet(tmp_path / "two.parquet"), pd.read_parquet(tmp_path / "one.parquet")
    assert len(one) == 98 and one["file"].is_unique and one["error"].isna().all()
    pd.testing.assert_frame_equal(two, one, check_exact=False, rtol=0, atol=2e-6)
    assert not (tmp_path / "two.parquet.parts").exists()


# ---------------------------------------------------------------------------------------------------------------
# Embeddings


def test_embeddings_per_file_and_window_equal_the_models(model_dir, model, real_folder, tmp_path):
    files = folder_files(real_folder, ["*.oga", "*.mp3", "odd/*/*"])
    out = tmp_path / "embeddings"
    assert embed_main([*files, "--model", str(model_dir), "--output", str(out), "--numpy", "--no-progress"]) == 1
    per_file = pd.read_parquet(out / "files.parquet")
    per_window = pd.read_parquet(out / "windows.parquet")
    assert per_file["file"].tolist() == files
    tagged = per_file[per_file["error"].isna()]
    assert set(per_file.loc[per_file["error"].notna(), "file"].map(lambda f: Path(f).name)) == BROKEN
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    for row in tagged.itertuples():
        clip = whole_clip(row.file)
        with torch.no_grad():  # the whole clip through the model, which windows it itself
            inputs = extractor(clip, sampling_rate=16000, return_tensors="pt")
            whole, spa = model(**inputs), model.spa(**inputs)
        np.testing.assert_allclose(row.audio_embeds, whole.audio_embeds[0].numpy(), atol=2e-5, err_msg=row.file)
        np.testing.assert_allclose(row.pooled_output, spa.pooled_output[0].numpy(), atol=2e-5)
        windows = per_window[per_window["file"] == row.file]
        starts = window_starts(len(clip), 16000, 16000)
        assert windows["window"].tolist() == list(range(len(starts))) == list(range(int(row.windows)))
        np.testing.assert_allclose(windows["start_s"], np.array(starts) / 16000)
        np.testing.assert_allclose(windows["end_s"] - windows["start_s"], min(len(clip), 16000) / 16000)
        with torch.no_grad():  # each window alone
            cut = [clip[s : s + 16000] for s in starts]
            alone = model.spa(**extractor(cut, sampling_rate=16000, return_tensors="pt"))
        np.testing.assert_allclose(np.stack(windows["audio_embeds"]), alone.audio_embeds.numpy(), atol=2e-5)
        np.testing.assert_allclose(np.stack(windows["pooled_output"]), alone.pooled_output.numpy(), atol=2e-5)
    # The NumPy arrays hold the same numbers, the failed files left out.
    assert json.loads((out / "files.json").read_text()) == tagged["file"].tolist()
    np.testing.assert_array_equal(np.load(out / "audio_embeds.npy"), np.stack(tagged["audio_embeds"]))
    np.testing.assert_array_equal(np.load(out / "window_pooled_output.npy"), np.stack(per_window["pooled_output"]))
    np.testing.assert_array_equal(np.load(out / "window_start_s.npy"), per_window["start_s"].to_numpy())
    row_of = {key: i for i, key in enumerate(tagged["file"])}
    np.testing.assert_array_equal(np.load(out / "window_file.npy"), per_window["file"].map(row_of).to_numpy())


def test_rows_tagged_before_a_ctrl_c_are_kept(model, real_folder, tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) midway: the rows a Parquet table still buffered are written, so the run started
    again tags only the others."""
    from modeling_spa.tagging import runs
    from modeling_spa.tagging.rows import model_layout

    collection = collect_files([str(real_folder)])
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    real_pipeline = runs.tag_collection

    def interrupted(*args, **kwargs):  # the pipeline, stopped by Ctrl-C after three files
        for count, result in enumerate(real_pipeline(*args, **kwargs)):
            if count == 3:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(runs, "tag_collection", interrupted)
    output = runs.TableOutput(tmp_path / "t.parquet", model_layout(model.config), order=list(collection))
    with pytest.raises(KeyboardInterrupt):
        runs.run_tagging(collection, model, extractor, [output], progress=False, num_workers=1)
    monkeypatch.setattr(runs, "tag_collection", real_pipeline)
    output = runs.TableOutput(tmp_path / "t.parquet", model_layout(model.config), order=list(collection))
    summary = runs.run_tagging(collection, model, extractor, [output], progress=False, num_workers=1)
    assert summary.skipped == 3 and summary.tagged + summary.failed == len(collection) - 3
    assert sorted(pd.read_parquet(tmp_path / "t.parquet")["file"]) == sorted(collection)
