"""--streaming and the default splits, on a local build shaped like agkphysics/AudioSet (train in two files, test).

datasets 5.2 sleeps 5 s whenever a shuffled parquet stream finishes a pass (`config.SLEEP_TIME_ON_THREADS_SHUTDOWN`,
a guard against an Arrow crash at interpreter exit): irrelevant for a pass over AudioSet, it would dominate these
tests, which end many tiny passes. They set it to 0, in this process and in the training runs they start.
"""

import json
import os
import signal
import subprocess
import time
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_runs import CLASSES, REPO, load_recipe, run, train_command, wav_bytes, with_rows

from modeling_spa.data import PADDING_KEY
from modeling_spa.data.splits import HELD_OUT, REST, SplitSpec, in_holdout, resolve_splits, select
from modeling_spa.data.streaming import (
    StreamBatchSampler,
    StreamPosition,
    StreamReader,
    StridedStreamBatchSampler,
    metadata_size,
    open_part,
    part_size,
    training_stream,
)
from modeling_spa.training.checkpointing import resumed_stream

TRAIN = SplitSpec("train", "train")
# The training recipe, with datasets' end-of-pass sleep off (see the module docstring).
NO_SLEEP = ("import runpy, sys, datasets.config; datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip


@pytest.fixture(autouse=True)
def no_pass_sleep(monkeypatch):
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory, ontology):
    """train: 24 one-second clips and 2 bad ones, in two files of 13 rows; test: 8 clips; no validation split."""
    root = tmp_path_factory.mktemp("hub_like")
    built = load_recipe("build_demo_dataset").build_demo_dataset(
        root / "src", 24, 0, 8, duration_s=1.0, class_names=CLASSES, ontology=ontology, speech=False
    )
    label = built["train"][0]["labels"]
    bad = [{"video_id": "synth_bad_unreadable", "audio": {"bytes": b"not audio", "path": "x.wav"}, "labels": label,
            "human_labels": []},
           {"video_id": "synth_bad_empty", "audio": {"bytes": wav_bytes(np.zeros(0, np.float32)), "path": "y.wav"},
            "labels": label, "human_labels": []}]  # fmt: skip
    train = with_rows(built["train"], bad)
    out = root / "build"
    (out / "data").mkdir(parents=True)
    train.select(range(13)).to_parquet(str(out / "data" / "train-00000-of-00002.parquet"))
    train.select(range(13, 26)).to_parquet(str(out / "data" / "train-00001-of-00002.parquet"))
    built["test"].to_parquet(str(out / "data" / "test-00000-of-00001.parquet"))
    (out / "classes.json").write_text((root / "src" / "classes.json").read_text())
    return out


def ids_of(rows) -> list[str]:
    return [row["video_id"] for row in rows]


# -- the default splits ---------------------------------------------------------------------------------------------


def test_without_a_validation_split_part_of_train_is_held_out_never_test():
    plan = resolve_splits(["train", "test"], validation_fraction=0.1, validation_seed=3)
    assert plan["eval"] == SplitSpec("validation", "train", HELD_OUT, 0.1, 3)
    assert plan["train"] == SplitSpec("train", "train", REST, 0.1, 3)
    assert plan["test"] == SplitSpec("test", "test")
    # A dataset with a validation split uses it; an explicit --eval_split wins (then test is not tested twice).
    assert resolve_splits(["train", "validation", "test"])["eval"] == SplitSpec("validation", "validation")
    explicit = resolve_splits(["train", "test"], eval_split="test")
    assert explicit["eval"] == SplitSpec("test", "test") and explicit["test"] is None and explicit["train"] == TRAIN
    assert resolve_splits(["train", "test"], test_split="")["test"] is None
    with pytest.raises(ValueError, match=r"has no split 'valid' \(--eval_split\); its splits: \['train', 'test'\]"):
        resolve_splits(["train", "test"], eval_split="valid")
    with pytest.raises(ValueError, match="no 'validation' split .* --validation_fraction in \\(0, 1\\) \\(got 0.0\\)"):
        resolve_splits(["train", "test"], validation_fraction=0.0)


def test_the_hold_out_depends_on_the_clip_id_and_its_seed_only(hub_like):
    ids = [f"clip{i:05d}" for i in range(20000)]
    held = [clip for clip in ids if in_holdout(clip, 0.05)]
    assert abs(len(held) - 1000) < 100 and in_holdout(held[0], 0.05) and not in_holdout(held[0], 0.0)
    assert held != [clip for clip in ids if in_holdout(clip, 0.05, seed=1)]
    # The same clips downloaded or streamed, in any row order; train and validation never share one.
    spec = SplitSpec("validation", "train", HELD_OUT, 0.25)
    rest = SplitSpec("train", "train", REST, 0.25)
    whole = datasets.load_dataset(str(hub_like), split="train")
    mapped = list(select(whole, spec)["video_id"])
    streamed = ids_of(open_part(str(hub_like), spec))
    assert mapped == streamed and 0 < len(mapped) < 26
    assert sorted(mapped + ids_of(open_part(str(hub_like), rest))) == sorted(whole["video_id"])
    assert sorted(select(whole.shuffle(seed=1), spec)["video_id"]) == sorted(mapped)
    assert part_size(str(hub_like), spec) == len(mapped) and metadata_size(str(hub_like), "train") == 26


# -- reading streams ------------------------------------------------------------------------------------------------


def test_passes_reshuffle_and_a_reader_resumes_exactly(hub_like):
    def reader(position: StreamPosition | None = None):
        return StreamReader(training_stream(open_part(str(hub_like), TRAIN), 7, 4), position or StreamPosition())

    first = reader()
    rows = ids_of(first.read() for _ in range(60))
    assert first.position == StreamPosition(2, 8)
    pass_0, pass_1 = rows[:26], rows[26:52]
    assert sorted(pass_0) == sorted(pass_1) and len(set(pass_0)) == 26 and pass_0 != pass_1
    for position, done in ((StreamPosition(0, 5), 5), (StreamPosition(1, 0), 26), (StreamPosition(1, 19), 45)):
        again = reader(position)
        assert ids_of(again.read() for _ in range(10)) == rows[done : done + 10], position
    with pytest.raises(ValueError, match="Cannot resume the stream at row 30 of pass 0: the pass has 26 rows"):
        reader(StreamPosition(0, 30)).read()


def test_processes_read_disjoint_shares(hub_like):
    # Two files, two processes: each reads one file (datasets' rule when the files divide evenly), reshuffled.
    readers = [StreamReader(training_stream(open_part(str(hub_like), TRAIN), 7, 4, rank, 2)) for rank in (0, 1)]
    shares = [ids_of(reader.read() for _ in range(13)) for reader in readers]
    assert not set(shares[0]) & set(shares[1]) and len(set(shares[0]) | set(shares[1])) == 26
    assert [reader.position for reader in readers] == [StreamPosition(0, 13)] * 2


def test_batch_sampler_keeps_the_position_of_every_batch(hub_like):
    stream = training_stream(open_part(str(hub_like), TRAIN), 7, 4)
    sampler = StreamBatchSampler(StreamReader(stream), batch_size=4, batches_per_epoch=5)
    epoch_0 = list(sampler)
    assert len(epoch_0) == 5 and all(len(batch) == 4 for batch in epoch_0)
    assert sampler.position_after(2) == StreamPosition(0, 8)
    epoch_1 = list(sampler)  # continues the stream: 6 rows of pass 0 are left, then pass 1
    assert sampler.position_after(10) == StreamPosition(1, 14)
    # A sampler resumed after batch 7 (2 of epoch 1) at its position gives the rest of epoch 1.
    again = StreamBatchSampler(StreamReader(stream, StreamPosition(1, 2)), 4, 5, batches_done=7, batches_in_epoch=2)
    assert [ids_of(b) for b in again] == [ids_of(b) for b in epoch_1[2:]]
    with pytest.raises(ValueError, match="No read position for batch 3"):
        sampler.position_after(3)


def test_evaluation_stream_scores_every_clip_once(hub_like):
    stream = open_part(str(hub_like), SplitSpec("test", "test"))
    samplers = [StridedStreamBatchSampler(stream, 8, 2, processes=3, index=i) for i in range(3)]
    batches = [list(sampler) for sampler in samplers]
    assert [len(b) for b in batches] == [2, 2, 2]  # ceil(ceil(8 / 3) / 2) each, evened out with padding
    rows = [row for process in batches for batch in process for row in batch]
    clips = [row["video_id"] for row in rows if not row.get(PADDING_KEY)]
    assert sorted(clips) == sorted(ids_of(stream)) and sum(bool(row.get(PADDING_KEY)) for row in rows) == 4
    for wrong in (7, 9):
        with pytest.raises(ValueError, match=f"The stream has 8 clips, not the {wrong} its size said"):
            list(StridedStreamBatchSampler(stream, wrong, 8))


def test_streaming_argument_rules():
    recipe = load_recipe("train")
    with pytest.raises(ValueError, match="--balanced_sampling draws clips by index from the whole split"):
        recipe.parse_arguments(["--streaming", "--balanced_sampling"])
    _, data_args, _, _ = recipe.parse_arguments(["--streaming", "--epoch_length", "64"])
    assert data_args.epoch_length == 64 and data_args.eval_split is None and data_args.num_workers is None
    saved = {"seed": 1, "shuffle_buffer": 4, "batch_size": 4, "num_processes": 1, "epoch_length": 16}
    with pytest.raises(ValueError, match=r"shuffle_buffer: 4 then, 8 now"):
        resumed_stream(saved, {**saved, "shuffle_buffer": 8}, None)
    with pytest.raises(ValueError, match=r"epoch_length: 16 then, 32 now"):
        resumed_stream(saved, saved, 32)


# -- a streamed training run, killed and resumed --------------------------------------------------------------------

# 26 train rows, a quarter held out for validation; 16 clips an epoch at batch 4 (4 steps), so epochs and passes do not
# line up: epoch 1 crosses from pass 0 into pass 1 (reshuffled). Checkpoints every 2 steps.
STREAMED = ("--streaming", "--shuffle_buffer", "4", "--validation_fraction", "0.25", "--num_epochs", "2",
            "--epoch_length", "16", "--test_split", "test")  # fmt: skip


def streamed_command(dataset, out, *extra) -> list[str]:
    command = train_command(dataset, out, *STREAMED, *extra)
    return [command[0], "-c", NO_SLEEP, *command[1:]]


@pytest.fixture(scope="module")
def streamed_run(hub_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "full"
    done = run(streamed_command(hub_like, out), REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_streamed_run_validates_on_the_hold_out_and_records_positions(streamed_run, hub_like):
    out, done = streamed_run
    assert "validate on 25.0% of 'train' (held out" in done.stdout and "test on the 'test' split" in done.stdout
    history = json.loads((out / "history.json").read_text())
    assert [epoch["step"] for epoch in history] == [4, 8]
    results = json.loads((out / "model" / "eval_results.json").read_text())
    assert set(results) == {"validation", "test"} and results["test"]["map"] > 0
    state = json.loads((out / "checkpoints" / "step_8" / "trainer_state.json").read_text())["stream"]
    # 32 rows read by one process from its passes over the rest of train (the bad clips included).
    rest = sum(not in_holdout(clip, 0.25) for clip in datasets.load_dataset(str(hub_like), split="train")["video_id"])
    passes = (32 - 1) // rest
    assert 16 < rest < 32 and state["positions"] == [[passes, 32 - passes * rest]] and state["batches"] == 8
    assert state["epoch_length"] == 16 and state["shuffle_buffer"] == 4
    card = (out / "model" / "README.md").read_text()
    assert "streamed, shuffled through a buffer of 4 clips" in card and "validate on 25.0% of 'train'" in card


@pytest.mark.slow
def test_killed_streamed_run_resumes_to_the_same_weights(streamed_run, hub_like, tmp_path):
    """Killed after its first checkpoint (step 2, mid-epoch 0) and resumed, with a DataLoader worker this time: the
    stream is re-read to each position and the run ends with the weights of the uninterrupted one."""
    full, _ = streamed_run
    out = tmp_path / "killed"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(streamed_command(hub_like, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step_2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists()
    done = run(streamed_command(hub_like, out, "--resume_from_checkpoint", "latest", "--num_workers", "1"), REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from" in done.stdout
    resumed, uninterrupted = (load_file(run_dir / "model" / "model.safetensors") for run_dir in (out, full))
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-5, atol=1e-6, msg=key)
    histories = [json.loads((run_dir / "history.json").read_text()) for run_dir in (out, full)]
    assert Counter(e["epoch"] for e in histories[0]) == Counter({0: 1, 1: 1})  # epoch 0 re-run from step 2 only
    assert histories[0][-1]["train_loss"] == pytest.approx(histories[1][-1]["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_two_streaming_processes_end_by_themselves(hub_like, tmp_path):
    """Each process reads one of the two files; both take the same number of batches (the epoch length over both),
    so their collectives match and they finish; the evaluation splits are strided over the processes."""
    from training_runs import launch_command

    command = streamed_command(hub_like, tmp_path / "ddp", "--num_epochs", "1")
    done = run([*launch_command(), "--no_python", *command], REPO, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step_2" / "trainer_state.json").read_text())["stream"]
    files = sorted((hub_like / "data").glob("train-*.parquet"))
    shares = [sum(not in_holdout(c, 0.25) for c in datasets.load_dataset("parquet", data_files=str(f))["train"]
                  ["video_id"]) for f in files]  # fmt: skip
    assert min(shares) >= 8  # each process's file holds its 2 batches of 4: no process wraps around
    assert state["num_processes"] == 2 and state["positions"] == [[0, 8], [0, 8]]
    assert json.loads((tmp_path / "ddp" / "model" / "eval_results.json").read_text())["test"]["map"] > 0


def test_a_hub_layout_with_configs_is_read_by_config(hub_like, tmp_path):
    """As agkphysics/AudioSet is laid out: configs (balanced, unbalanced) declared in the card, each with train and
    test. The splits, sizes and streams of a config come from its own files."""
    import shutil

    layout = {"balanced": ("train-00000-of-00002", "test-00000-of-00001"),
              "unbalanced": ("train-00001-of-00002", "test-00000-of-00001")}  # fmt: skip
    for config, files in layout.items():
        (tmp_path / config).mkdir()
        for name in files:
            shutil.copy(hub_like / "data" / f"{name}.parquet", tmp_path / config / f"{name.split('-')[0]}.parquet")
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.parquet\n"
            f"  - split: test\n    path: {c}/test.parquet\n"
            for c in ("balanced", "unbalanced")
        )  # fmt: skip
        + "---\n"
    )
    from modeling_spa.data.splits import split_names

    assert split_names(str(tmp_path), "balanced") == ["train", "test"]
    assert metadata_size(str(tmp_path), "train", "unbalanced") == 13
    streamed = ids_of(open_part(str(tmp_path), TRAIN, "balanced"))
    first_file = datasets.load_dataset("parquet", data_files=str(hub_like / "data" / "train-00000-of-00002.parquet"))
    assert streamed == list(first_file["train"]["video_id"])
