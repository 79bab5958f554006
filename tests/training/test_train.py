"""recipes/train.py end to end on a tiny real `datasets` build: plain, killed and resumed, two processes."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import soundfile
import torch
from recipe_loader import load_recipe
from safetensors.torch import load_file
from training_runs import CLASSES, REPO, launch_command, run, train_command, wav_bytes, with_rows
from transformers import AutoModel

from modeling_spa.analysis.diagnostics import AUDIO_KEYS, LABEL_KEYS
from modeling_spa.data.sampling import balanced_weights, expected_class_frequency, label_indices
from modeling_spa.hub.publish import push_to_hub
from modeling_spa.training.accelerator import default_mixed_precision
from modeling_spa.training.guard import check_step
from modeling_spa.training.optimization import prior_bias

BAD_CLIPS = ["synth_bad_unreadable", "synth_bad_empty", "synth_bad_nan", "synth_bad_truncated",
             "synth_bad_one_sample_96k", "synth_bad_missing"]  # fmt: skip
# Everything of the training recipe on: balanced sampling (5 steps an epoch), augmentation, separate and layer-wise
# decayed learning rates, the backbone frozen for the first 6 steps (past the first epoch), EMA, checkpointed blocks,
# and every label-space term (contrastive L_SPA, centred label text, uniformity and geometry).
ALL_ON = ("--balanced_sampling", "--epoch_length", "20", "--mixup_alpha", "0.3", "--freq_masks", "2",
          "--freq_mask_width", "8", "--time_masks", "2", "--time_mask_width", "10", "--min_gain_db", "-6",
          "--max_gain_db", "6", "--time_shift_s", "0.2", "--backbone_learning_rate", "0.001", "--layer_decay", "0.5",
          "--freeze_backbone_steps", "6", "--ema_decay", "0.9", "--gradient_checkpointing",
          "--spa_objective", "contrastive", "--spa_temperature", "0.2", "--center_label_text",
          "--spa_uniformity_weight", "0.1", "--spa_geometry_weight", "0.5")  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, ontology):
    """24/8/8 one-second clips of 7 classes, plus six bad clips in the train split and one in validation."""
    root = tmp_path_factory.mktemp("data")
    build = load_recipe("build_demo_dataset").build_demo_dataset
    data = build(root / "clean", 24, 8, 8, duration_s=1.0, class_names=CLASSES, ontology=ontology, speech=False)
    flac = data["train"][0]["audio"]["bytes"]
    label = data["train"][0]["labels"]
    broken = [
        ("synth_bad_unreadable", b"not audio at all"),
        ("synth_bad_empty", wav_bytes(np.zeros(0, dtype=np.float32))),
        ("synth_bad_nan", wav_bytes(np.full(16000, np.nan, dtype=np.float32))),
        ("synth_bad_truncated", flac[:60]),
        # One sample at 96 kHz resamples to none: it used to pass as valid and turn the loss into NaN.
        ("synth_bad_one_sample_96k", wav_bytes(np.full(1, 0.5, dtype=np.float32), 96000)),
        ("synth_bad_missing", None),  # a Hub build whose file is missing: it used to kill the DataLoader
    ]
    rows = [
        {
            "video_id": vid,
            "audio": None if raw is None else {"bytes": raw, "path": f"{vid}.wav"},
            "labels": label,
            "human_labels": [],
        }
        for vid, raw in broken
    ]
    out = root / "with_bad"
    (out / "data").mkdir(parents=True)
    with_rows(data["train"], rows).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    with_rows(data["validation"], rows[:1]).to_parquet(str(out / "data" / "validation-00000-of-00001.parquet"))
    data["test"].to_parquet(str(out / "data" / "test-00000-of-00001.parquet"))
    (out / "classes.json").write_text((root / "clean" / "classes.json").read_text())
    return out


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    """One full run, which also tries (and, offline, fails) to push to the Hub."""
    out = tmp_path_factory.mktemp("run") / "full"
    done = run(train_command(dataset_dir, out, "--push_to_hub", "--hub_model_id", "spa-test/tiny"), REPO)
    return out, done


@pytest.fixture(scope="module")
def trained_all_on(dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "all_on"
    done = run(train_command(dataset_dir, out, *ALL_ON), REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_training_saves_a_loadable_model_with_a_card(trained):
    out, done = trained
    model_dir = out / "model"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_spa.py"):
        assert (model_dir / name).is_file(), name
    results = json.loads((model_dir / "eval_results.json").read_text())
    for split in ("validation", "test"):
        assert 0 <= results[split]["map"] <= 1 and 0 <= results[split]["omap"] <= 1
        assert len(results[split]["omap_per_lambda"]) >= 2
    card = (model_dir / "README.md").read_text()
    assert "model-index" in card and f"{results['test']['omap']:.4f}" in card
    model = AutoModel.from_pretrained(model_dir)
    assert sorted(model.config.label_names) == sorted(CLASSES)


def test_collapse_diagnostics_every_epoch_in_history_and_card(trained, dataset_dir):
    """The paper's objective (the default): the diagnostics per epoch in history.json, at the end in
    eval_results.json and the card, and recomputed from the saved checkpoint by the module's CLI."""
    out, _ = trained
    history = json.loads((out / "history.json").read_text())
    keys = [f"eval_{k}" for k in LABEL_KEYS + AUDIO_KEYS]
    assert all(key in epoch for epoch in history for key in keys)
    assert len({epoch["eval_text_cos_mean"] for epoch in history}) == 1  # T̂ is a buffer: the same every epoch
    for epoch in history:
        assert -1 <= epoch["eval_label_cos_min"] <= epoch["eval_label_cos_mean"] <= 1
        assert -1 <= epoch["eval_label_ontology_spearman"] <= 1 and 0 <= epoch["eval_audio_label_auc"] <= 1
        margin = epoch["eval_audio_positive_cos"] - epoch["eval_audio_negative_cos"]
        assert epoch["eval_audio_cos_margin"] == pytest.approx(margin)
    results = json.loads((out / "model" / "eval_results.json").read_text())
    assert results["validation"]["label_cos_mean"] == history[-1]["eval_label_cos_mean"]  # the same final weights
    card = (out / "model" / "README.md").read_text()
    assert "Label space" in card and f"E_t: mean pairwise cosine {results['test']['label_cos_mean']:.3f}" in card
    assert f"| test | {results['test']['audio_positive_cos']:.3f} |" in card
    for epoch in history:  # the per-epoch table
        assert f"| {epoch['epoch']} | {epoch['train_spa_loss']:.3f} | {epoch['eval_label_cos_mean']:.3f} |" in card
    assert "L_SPA is the paper's Eq. 4" in card and "p_t learned, with bias" in card
    command = [sys.executable, "-m", "modeling_spa.analysis.diagnostics", str(out / "model"),
               "--dataset", str(dataset_dir), "--split", "test"]  # fmt: skip
    done = run(command, REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    recomputed = json.loads(done.stdout[done.stdout.index("{") :])
    assert recomputed == pytest.approx({k: results["test"][k] for k in LABEL_KEYS + AUDIO_KEYS}, abs=1e-5)


def test_offline_push_fails_clearly_after_saving(trained):
    out, done = trained
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Pushing to the Hub as 'spa-test/tiny' failed" in done.stderr
    assert f"Everything is saved in {out / 'model'}" in done.stderr


def test_bad_clips_are_skipped_counted_and_named(trained):
    out, done = trained
    history = json.loads((out / "history.json").read_text())
    assert [epoch["train_skipped_clips"] for epoch in history] == [6, 6, 6]
    assert [epoch["eval_skipped_clips"] for epoch in history] == [1, 1, 1]
    assert [epoch["train_skipped_steps"] for epoch in history] == [0, 0, 0]  # no bad clip reaches the loss
    for name in BAD_CLIPS:
        assert name in done.stdout
    assert "too short: 0 sample(s) at 16000 Hz (1 at 96000 Hz" in done.stdout
    assert "synth_bad_missing (no audio" in done.stdout
    assert all(math.isfinite(epoch["train_loss"]) for epoch in history)
    assert history[-1]["eval_map"] > 0


def test_all_on_run_records_groups_rates_averages_and_settings(trained_all_on, dataset_dir, ontology):
    out = trained_all_on
    history = json.loads((out / "history.json").read_text())
    assert [epoch["step"] for epoch in history] == [5, 10, 15]  # --epoch_length 20 at batch 4
    rates = [epoch["lr"] for epoch in history]
    assert set(rates[0]) == {"heads", "heads.no_decay", "backbone.layer_0.no_decay", "backbone.layer_1",
                             "backbone.layer_1.no_decay", "backbone.layer_2", "backbone.layer_2.no_decay"}  # fmt: skip
    # Epoch 0 ends inside the 6 frozen steps: the backbone's rate is 0, the heads' follows the schedule.
    assert rates[0]["heads"] > 0 and all(lr == 0 for name, lr in rates[0].items() if name.startswith("backbone"))
    # Then each block's rate is the backbone's (1/3 of the heads') times 0.5^(L + 1 - depth), L = 2 blocks.
    for depth, name in ((0, "backbone.layer_0.no_decay"), (1, "backbone.layer_1"), (2, "backbone.layer_2.no_decay")):
        assert rates[1][name] == pytest.approx(rates[1]["heads"] / 3 * 0.5 ** (3 - depth), rel=1e-9)
    assert all("eval_ema_map" in epoch for epoch in history)
    for folder in ("model", "model_ema"):
        for name in ("config.json", "model.safetensors", "README.md", "eval_results.json", "training_args.json"):
            assert (out / folder / name).is_file(), (folder, name)
    ema_card = (out / "model_ema" / "README.md").read_text()
    assert "exponential moving average (decay 0.9)" in ema_card and "class-balanced sampling" in ema_card
    objective = "(L_BCE + L_OBCE)/2 + 0.3 · (L_SPA + 0.1 · L_unif + 0.5 · L_geo); L_SPA is the clip-vs-all-labels"
    assert objective in ema_card and "τ = 0.2; centred T̂" in ema_card and "p_t learned, without bias" in ema_card
    assert all(epoch["train_spa_uniformity_loss"] < 0 and epoch["train_spa_geometry_loss"] > 0 for epoch in history)
    assert "mixup Beta(0.3, 0.3) on the log-mel" in ema_card and "backbone frozen for the first 6 steps" in ema_card
    last, average = (load_file(out / folder / "model.safetensors") for folder in ("model", "model_ema"))
    assert not torch.equal(last["classifier.weight"], average["classifier.weight"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["augmentation"]["mixup_alpha"] == 0.3 and config["augmentation"]["time_mask_width"] == 10
    expected_objective = {
        "spa_objective": "contrastive",
        "spa_temperature": 0.2,
        "center_label_text": True,
        "spa_uniformity_weight": 0.1,
        "spa_geometry_weight": 0.5,
        "freeze_text_projection": False,
    }
    assert {k: config[k] for k in expected_objective} == expected_objective
    torch.testing.assert_close(last["label_text_mean"], last["label_text_embeds"].mean(dim=0))
    assert "text_projection.bias" not in last
    assert json.loads((out / "model" / "training_args.json").read_text())["data"]["balanced_sampling"] is True
    # The classifier bias started at the log-odds of the class frequencies the sampler draws (15 small steps since).
    train = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "train-*.parquet"))["train"]
    mids = config["label_mids"]
    labels = label_indices(train["labels"], mids)
    expected = prior_bias(expected_class_frequency(labels, balanced_weights(labels, len(mids)), len(mids)))
    assert expected.abs().max() > 1.5  # far from the 0 of a default initialisation
    torch.testing.assert_close(last["classifier.bias"].double(), expected, atol=0.1, rtol=0)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(trained_all_on, dataset_dir, tmp_path):
    """With every random part of the recipe on: the sampler, augmentation, the frozen warm-up, the EMA."""
    full = trained_all_on
    out = tmp_path / "killed"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(train_command(dataset_dir, out, *ALL_ON), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step_2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists()  # killed before the end
    state = json.loads((out / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    assert state["batches_in_epoch"] == 2 and state["epoch_sums"]["batches"] == 2  # in epoch 0, of 5 batches
    done = run(train_command(dataset_dir, out, *ALL_ON, "--resume_from_checkpoint", "latest"), REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from" in done.stdout
    for folder in ("model", "model_ema"):
        resumed, uninterrupted = (load_file(run / folder / "model.safetensors") for run in (out, full))
        assert resumed.keys() == uninterrupted.keys()
        for key in resumed:
            torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-5, atol=1e-6, msg=f"{folder} {key}")
    assert_same_epoch_losses(out, full)


def assert_same_epoch_losses(resumed: Path, uninterrupted: Path) -> None:
    """Every epoch's mean training losses in history.json: an epoch resumed mid-way covers all its batches."""
    histories = [json.loads((run / "history.json").read_text()) for run in (resumed, uninterrupted)]
    assert [epoch["epoch"] for epoch in histories[0]] == [epoch["epoch"] for epoch in histories[1]]
    for ours, theirs in zip(*histories, strict=True):
        losses = {key: value for key, value in theirs.items() if key.startswith("train_") and key.endswith("_loss")}
        assert "train_loss" in losses and "train_spa_loss" in losses
        assert {key: ours[key] for key in losses} == pytest.approx(losses, rel=1e-5), ours["epoch"]


def test_unknown_label_is_an_error_naming_it(dataset_dir, tmp_path):
    split = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "validation-*.parquet"))["train"]
    row = split[0] | {"video_id": "synth_odd_label", "labels": ["/m/09x0r"]}  # Speech: not among the classes
    folder = tmp_path / "odd"
    (folder / "data").mkdir(parents=True)
    with_rows(split, [row]).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    split.to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))
    (folder / "classes.json").write_text((dataset_dir / "classes.json").read_text())
    done = run(train_command(folder, tmp_path / "out", "--test_split", "", "--num_epochs", "1"), REPO)
    assert done.returncode != 0
    assert "clip synth_odd_label" in done.stderr and "/m/09x0r" in done.stderr


# Two processes with the whole recipe on, the frozen backbone included (its gradients are computed and all-reduced,
# then dropped: DDP waits for none that never comes). 20 clips an epoch over 2 processes at batch 4: 24 draws (whole
# rounds of 8), 3 steps an epoch; frozen for 4 steps; every checkpoint kept, for the resume test.
DDP_ALL_ON = (*ALL_ON, "--num_epochs", "2", "--freeze_backbone_steps", "4", "--keep_checkpoints", "10")


@pytest.fixture(scope="module")
def ddp_all_on(dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ddp_all_on"
    done = run(launch_command() + train_command(dataset_dir, out, *DDP_ALL_ON)[1:], REPO, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]  # both ranks exit by themselves
    return out


def test_two_processes(dataset_dir, tmp_path):
    # At α = 0, p_t gets no gradient: DDP must not wait for one. Both ranks must also exit by themselves (they used
    # to deadlock in the process group's destructor).
    # Batch 5: the 30 training clips are 3 whole rounds of 2 batches, so every epoch takes each of them once.
    extra = ("--num_epochs", "2", "--spa_alpha", "0", "--batch_size", "5")
    done = run(launch_command() + train_command(dataset_dir, tmp_path / "ddp", *extra)[1:], REPO, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert [epoch["train_skipped_clips"] for epoch in history] == [6, 6]  # unique over both processes
    assert history[0]["eval_skipped_clips"] == 1
    assert json.loads((tmp_path / "ddp" / "model" / "eval_results.json").read_text())["test"]["map"] > 0


@pytest.mark.slow
def test_two_processes_with_the_whole_recipe(ddp_all_on):
    history = json.loads((ddp_all_on / "history.json").read_text())
    assert [epoch["step"] for epoch in history] == [3, 6] and history[0]["eval_skipped_clips"] == 1
    assert history[0]["lr"]["backbone.layer_1"] == 0 and history[0]["lr"]["heads"] > 0  # step 3: still frozen
    for folder in ("model", "model_ema"):
        assert json.loads((ddp_all_on / folder / "eval_results.json").read_text())["test"]["map"] > 0


@pytest.mark.slow
def test_two_process_run_resumed_mid_epoch_ends_with_the_same_weights(ddp_all_on, dataset_dir, tmp_path):
    """From step 4, the first batch of epoch 1, in a fresh pair of processes: the sampler must redraw epoch 1
    (Accelerate's skipping loader does not pass its epoch on to the sampler under DDP), the backbone unfreezes there,
    and the processes' augmentation streams continue from the checkpoint."""
    step_4 = ddp_all_on / "checkpoints" / "step_4"
    assert json.loads((step_4 / "trainer_state.json").read_text())["batches_in_epoch"] == 1
    out = tmp_path / "resumed"
    extra = (*DDP_ALL_ON, "--resume_from_checkpoint", str(step_4))
    done = run(launch_command() + train_command(dataset_dir, out, *extra)[1:], REPO, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    for folder in ("model", "model_ema"):
        resumed, uninterrupted = (load_file(run / folder / "model.safetensors") for run in (out, ddp_all_on))
        for key in resumed:
            torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-5, atol=1e-6, msg=f"{folder} {key}")
    assert_same_epoch_losses(out, ddp_all_on)  # the epoch means over both processes, step 4's batches included


@pytest.mark.slow
def test_two_processes_use_every_position_of_an_epoch_once(dataset_dir, tmp_path):
    """The training loader recipes/train.py builds and prepares, in 2 processes at batch 4 (rounds of 8 clips): each
    process's batches, gathered per epoch. Uniform shuffling takes 24 of the 30 training clips an epoch (the last
    incomplete round dropped), each once; the balanced sampler draws 24 for --epoch_length 20 (rounded up), and the
    processes' batches dealt in turn are that draw, every position once. Accelerate used to complete a short last
    round from the start of the epoch's order, using those clips twice. A resumed epoch is the rest of the same."""
    out = tmp_path / "draws.json"
    arguments = train_command(dataset_dir, tmp_path / "unused", "--balanced_sampling", "--epoch_length", "20")[2:]
    command = [*launch_command(), str(REPO / "tests" / "scripts" / "train_draws.py"), str(out), *arguments]
    done = run(command, REPO, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(out.read_text())
    split = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "train-*.parquet"))["train"]
    assert len(split) == 30
    uniform = records["uniform"]
    for epoch in uniform["epochs"]:
        assert [len(batches) for batches in epoch] == [3, 3]  # per process
        used = [clip for batches in epoch for batch in batches for clip in batch]
        assert len(used) == len(set(used)) == 24 and set(used) <= set(split["video_id"])
    assert uniform["epochs"][0] != uniform["epochs"][1]  # reshuffled: other clips are left out every epoch
    balanced = records["balanced"]
    for epoch, draw in zip(balanced["epochs"], balanced["draws"], strict=True):
        assert [len(batches) for batches in epoch] == [3, 3] and len(draw) == 24
        dealt = [clip for batches in zip(*epoch, strict=True) for batch in batches for clip in batch]
        assert dealt == draw  # process 0's batch, process 1's, in turn: the draw in order, each position once
    assert balanced["draws"][0] != balanced["draws"][1]
    for record in (uniform, balanced):  # resumed after one batch: the rest of the last epoch
        assert record["resumed"] == [batches[1:] for batches in record["epochs"][-1]]


def test_unknown_yaml_key_is_named(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("learning_rte: 3.0e-3\nbatch_size: 4\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rte'\]"):
        load_recipe("train").parse_arguments([str(config)])


def test_push_to_hub_uploads_the_folder(monkeypatch, tmp_path):
    import huggingface_hub

    calls = {}
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.update(repo=(repo_id, kw))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(upload=kw) or "https://hub/commit/1"
    )
    (tmp_path / "config.json").write_text("{}")
    assert push_to_hub(tmp_path, "org/spa-tiny", private=True) == "https://hub/commit/1"
    assert calls["repo"] == ("org/spa-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"]["folder_path"] == str(tmp_path) and calls["upload"]["repo_id"] == "org/spa-tiny"


def test_spa_tag_on_mp3_and_corrupt_files(trained, dataset_dir, tmp_path):
    out, _ = trained
    clip = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "test-*.parquet"))["train"][0]
    wave, rate = soundfile.read(io.BytesIO(clip["audio"]["bytes"]), dtype="float32")
    stereo_44k = np.repeat(np.interp(np.arange(0, len(wave), rate / 44100), np.arange(len(wave)), wave)[:, None], 2, 1)
    soundfile.write(tmp_path / "clip.mp3", stereo_44k.astype(np.float32), 44100, format="MP3")
    (tmp_path / "broken.ogg").write_bytes(b"OggS" + bytes(64))
    soundfile.write(tmp_path / "tiny.wav", np.zeros(100, dtype=np.float32), 16000)  # shorter than one frame
    command = [sys.executable, "-m", "modeling_spa.cli.tag", str(tmp_path / "clip.mp3"), str(tmp_path / "broken.ogg"),
               str(tmp_path / "tiny.wav"),
               "--model", str(out / "model"), "--top-k", "3", "--json"]  # fmt: skip
    done = run(command, tmp_path)
    assert done.returncode == 1  # one file could not be read
    assert "broken.ogg" in done.stderr and "tiny.wav" in done.stderr
    tagged = json.loads(done.stdout.strip().splitlines()[-1])
    assert tagged["file"].endswith("clip.mp3") and len(tagged["labels"]) == 3
    top = tagged["labels"][0]
    assert top["label"] in CLASSES and " > " in top["path"] and 0 < top["score"] < 1


def test_non_finite_steps_are_skipped_reported_and_stop_the_run(capsys):
    accelerator, model = SimpleNamespace(process_index=1), torch.nn.Linear(2, 2)
    state = {"completed_steps": 6}
    assert check_step(accelerator, model, torch.tensor(3.0), ["a"], state) and state["non_finite_in_a_row"] == 0
    assert not check_step(accelerator, model, torch.tensor(float("nan")), ["clip_x", "clip_y"], state)
    report = "[process 1] skipped optimizer step 7: non-finite gradients (norm nan); clips in the step: clip_x, clip_y"
    assert report in capsys.readouterr().out
    assert not check_step(accelerator, model, torch.tensor(float("inf")), ["clip_z"], state)
    assert check_step(accelerator, model, torch.tensor(1.0), ["b"], state)  # a finite step resets the count
    for _ in range(2):
        assert not check_step(accelerator, model, torch.tensor(float("nan")), ["c"], state)
    with pytest.raises(RuntimeError, match=r"3 optimizer steps in a row had non-finite gradients.*clips .*: d"):
        check_step(accelerator, model, torch.tensor(float("nan")), ["d"], state)
    # NaN already written into BatchNorm statistics by the forward pass: no later step can recover from that.
    poisoned = torch.nn.BatchNorm1d(2)
    poisoned.running_mean.fill_(float("nan"))
    with pytest.raises(RuntimeError, match=r"non-finite values into the buffers \['running_mean'\]"):
        check_step(accelerator, poisoned, torch.tensor(float("nan")), ["e"], {"completed_steps": 0})


@pytest.mark.slow
def test_diverging_two_process_run_stops_with_a_clear_error(dataset_dir, tmp_path):
    # A learning rate of 1e30 blows the weights up after one step: every later step is non-finite. Both ranks take
    # the same decision (the gradients are all-reduced), stop with the error, and exit.
    # Batch 3: 5 steps an epoch (30 clips in rounds of 6), enough for 3 non-finite ones in a row after the first.
    extra = ("--num_epochs", "1", "--learning_rate", "1e30", "--warmup_ratio", "0", "--test_split", "",
             "--batch_size", "3")  # fmt: skip
    done = run(launch_command() + train_command(dataset_dir, tmp_path / "nan", *extra)[1:], REPO, timeout=180)
    assert done.returncode != 0
    assert "error: Training stopped at step" in done.stderr and "clips of the last step: synth_" in done.stderr
    assert "skipped optimizer step" in done.stdout
    assert not (tmp_path / "nan" / "model").exists()


def test_baselines_and_switches_parse(monkeypatch):
    recipe = load_recipe("train")
    model_args, *_ = recipe.parse_arguments(["--baseline", "wo_spa", "--spa_alpha", "0.5"])
    assert (model_args.spa_alpha, model_args.classification_loss) == (0.0, "obce")  # the paper's "w/o SPA"
    model_args, *_ = recipe.parse_arguments(["--baseline", "bce"])
    assert (model_args.spa_alpha, model_args.classification_loss) == (0.0, "bce")
    model_args, *_ = recipe.parse_arguments([])  # the paper's Eq. 4 with a learnable p_t with bias
    assert (model_args.spa_objective, model_args.freeze_text_projection, model_args.center_label_text) == (
        "paper", False, False)  # fmt: skip
    switches = ["--spa_objective", "contrastive", "--spa_temperature", "0.05", "--freeze_text_projection",
                "--center_label_text", "--spa_uniformity_weight", "0.2", "--spa_geometry_weight", "1"]  # fmt: skip
    model_args, *_ = recipe.parse_arguments(switches)
    assert (model_args.spa_objective, model_args.spa_temperature, model_args.freeze_text_projection,
            model_args.center_label_text, model_args.spa_uniformity_weight, model_args.spa_geometry_weight) == (
        "contrastive", 0.05, True, True, 0.2, 1.0)  # fmt: skip
    with pytest.raises(ValueError, match="--baseline must be one of"):
        recipe.parse_arguments(["--baseline", "public"])
    with pytest.raises(ValueError, match="add --balanced_sampling"):
        recipe.parse_arguments(["--epoch_length", "100"])
    _, _, augmentation, args = recipe.parse_arguments(["--mixup_alpha", "0.5", "--freq_masks", "2"])
    assert augmentation.mixup_alpha == 0.5 and augmentation.freq_masks == 2 and args.mixed_precision is None
    # Mixed precision: the script's choice, else the launcher's other than "no", else bf16 on a GPU with it.
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert default_mixed_precision(args) == "bf16"
    assert default_mixed_precision(SimpleNamespace(mixed_precision=None, cpu=True)) == "no"
    assert default_mixed_precision(SimpleNamespace(mixed_precision="no", cpu=False)) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert default_mixed_precision(args) is None  # Accelerator reads the launcher's fp16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert default_mixed_precision(args) == "no"
