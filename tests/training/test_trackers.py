"""The trackers recipes/train.py advertises, with a real (tiny) run: TensorBoard event files and a local trackio project
hold the logged scalars, with no network; `--unknown_labels ignore` on the way; the README's curves from the run's
history.json."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import matplotlib.image
import pytest
from training_runs import REPO, load_recipe, run

from modeling_spa.analysis.reporting import CURVE_PANELS, plot_training_curves
from modeling_spa.training.trackers import tracker_scalars

CLASSES = ["Siren", "White noise", "Dial tone", "Tick"]
ODD_MID = "/m/09x0r"  # Speech: not one of the classes
# Every outside connection fails and is written down: trackio must work from its local storage alone.
NO_NETWORK = textwrap.dedent(
    """
    import os, socket

    LOCAL = {None, "127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


    def _note(what):
        with open(os.environ["SPA_TEST_NETWORK_LOG"], "a") as log:
            log.write(f"{what}\\n")
        raise OSError(f"network blocked by the test: {what}")


    _getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect


    def getaddrinfo(host, *args, **kwargs):
        return _getaddrinfo(host, *args, **kwargs) if host in LOCAL else _note(f"resolve {host}")


    def connect(self, address):
        local = not isinstance(address, tuple) or address[0] in LOCAL
        return _connect(self, address) if local else _note(f"connect {address}")


    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
    """
)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, ontology):
    """16/8/8 one-second clips of 4 classes; one training clip also carries a label outside them."""
    root = tmp_path_factory.mktemp("tracker_data")
    build = load_recipe("build_demo_dataset").build_demo_dataset
    build(root, 16, 8, 8, duration_s=1.0, class_names=CLASSES, ontology=ontology, speech=False)
    shard = next((root / "data").glob("train-*.parquet"))
    train = datasets.load_dataset("parquet", data_files=str(shard))["train"]
    odd = train.map(
        lambda row, i: {"labels": row["labels"] + [ODD_MID] if i == 0 else row["labels"]}, with_indices=True
    )
    odd.to_parquet(str(shard))
    return root


@pytest.fixture(scope="module")
def tracked(dataset_dir, tmp_path_factory):
    """One tiny run logging to TensorBoard and trackio at once, with every outside connection refused."""
    root = tmp_path_factory.mktemp("tracked")
    (root / "guard").mkdir()
    (root / "guard" / "sitecustomize.py").write_text(NO_NETWORK)
    out = root / "run"
    command = [sys.executable, str(REPO / "recipes" / "train.py"), "--backbone", "demo_cnn", "--frontend", "tiny",
               "--audio_config", '{"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.2}',
               "--projection_dim", "16", "--text_encoder", "sentence-transformers/all-MiniLM-L6-v2",
               "--dataset", str(dataset_dir), "--classes", str(dataset_dir / "classes.json"), "--max_length_s", "1.0",
               "--num_workers", "0", "--output_dir", str(out), "--num_epochs", "2", "--batch_size", "4",
               "--eval_batch_size", "8", "--logging_steps", "3", "--learning_rate", "0.003", "--cpu",
               "--unknown_labels", "ignore", "--report_to", "tensorboard,trackio"]  # fmt: skip
    env = {
        "PYTHONPATH": f"{root / 'guard'}:{REPO}",
        "SPA_TEST_NETWORK_LOG": str(root / "network.log"),
        "TRACKIO_DIR": str(root / "trackio"),  # trackio's local storage (default: $HF_HOME/trackio)
    }
    done = run(command, REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    return root, out, done, history


def event_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return scalars


def test_tensorboard_event_files_hold_the_logged_scalars(tracked):
    _, out, _, history = tracked
    scalars = event_scalars(out / "run")  # accelerate's folder: project_dir / the run's name
    # Every 3 optimizer steps of 4 an epoch: the running means of the losses and each group's learning rate.
    assert [step for step, _ in scalars["train/loss"]] == [3, 6]
    assert "lr/heads" in scalars and "lr/backbone" in scalars
    # Per epoch, at its last step: the validation metrics, the diagnostics, the epoch means of the losses.
    for entry in history:
        step = entry["step"]
        for tag, key in (("eval/map", "eval_map"), ("eval/omap", "eval_omap"), ("train_epoch/loss", "train_loss"),
                         ("train_epoch/spa_loss", "train_spa_loss"), ("eval/label_cos_mean", "eval_label_cos_mean"),
                         ("eval/audio_label_auc", "eval_audio_label_auc"), ("lr/heads", None)):  # fmt: skip
            expected = entry["lr"]["heads"] if key is None else entry[key]
            assert dict(scalars[tag])[step] == pytest.approx(expected, rel=1e-6), tag
    # One point per tag and step; the step is the axis, not a value.
    assert all(len({s for s, _ in points}) == len(points) for points in scalars.values())
    assert "step" not in scalars and "epoch/seconds" in scalars


def test_trackio_writes_a_local_project_without_network(tracked):
    root, out, done, history = tracked
    read = textwrap.dedent(
        """
        import json, sys
        from trackio.sqlite_storage import SQLiteStorage

        project = sys.argv[1]
        runs = SQLiteStorage.get_runs(project)
        print(json.dumps({"projects": SQLiteStorage.get_projects(), "runs": runs,
                          "logs": SQLiteStorage.get_logs(project, runs[0])}, default=str))
        """
    )
    env = {"TRACKIO_DIR": str(root / "trackio"), "HF_HUB_OFFLINE": "1"}
    reader = subprocess.run([sys.executable, "-c", read, out.name], capture_output=True, text=True, timeout=300,
                            env=os.environ | env)  # fmt: skip
    assert reader.returncode == 0, reader.stderr[-3000:]
    stored = json.loads(reader.stdout.strip().splitlines()[-1])
    assert stored["projects"] == [out.name] and len(stored["runs"]) == 1
    logs = stored["logs"]
    by_step = {}
    for log in logs:
        by_step.setdefault(log["step"], {}).update(log)
    assert sorted(by_step) == [3, 4, 6, 8]
    for entry in history:
        logged = by_step[entry["step"]]
        assert logged["eval/omap"] == pytest.approx(entry["eval_omap"])
        assert logged["eval/label_ontology_spearman"] == pytest.approx(entry["eval_label_ontology_spearman"])
        assert logged["train_epoch/obce_loss"] == pytest.approx(entry["train_obce_loss"])
        assert logged["epoch"] == entry["epoch"]
    assert not any("__step" in log for log in logs)  # no `step` value for trackio to rename
    assert "Trackio metrics logged to" in done.stdout
    assert not (root / "network.log").exists(), (root / "network.log").read_text()
    # The guard was in force: the same environment refuses and records a connection.
    probe = "import socket; socket.create_connection(('huggingface.co', 443), timeout=5)"
    guard = {"PYTHONPATH": str(root / "guard"), "SPA_TEST_NETWORK_LOG": str(root / "probe.log")}
    refused = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ | guard)
    assert refused.returncode != 0 and "resolve huggingface.co" in (root / "probe.log").read_text()


def test_labels_outside_the_classes_are_left_out_and_counted(tracked):
    _, out, done, _ = tracked
    assert f"left out (mid: training clips): {{'{ODD_MID}': 1}}" in done.stdout
    recorded = json.loads((out / "model" / "training_args.json").read_text())
    assert recorded["data"]["unknown_labels"] == "ignore"


def test_tracker_scalars_flatten_an_epoch_summary():
    summary = {"epoch": 2, "step": 40, "seconds": 3.5, "train_loss": 0.5, "train_skipped_clips": 0, "eval_map": 0.3,
               "eval_ema_omap": 0.7, "lr": {"heads": 1e-3, "backbone.layer_1": 1e-5},
               "eval_omap_per_lambda": [0.1]}  # fmt: skip
    assert tracker_scalars(summary) == {
        "epoch": 2, "epoch/seconds": 3.5, "train_epoch/loss": 0.5, "train_epoch/skipped_clips": 0, "eval/map": 0.3,
        "eval_ema/omap": 0.7, "lr/heads": 1e-3, "lr/backbone.layer_1": 1e-5,
    }  # fmt: skip
    assert "lr/heads" not in tracker_scalars(summary, skip=("lr",))


def test_training_curves_from_the_runs_history(tracked, tmp_path):
    _, out, _, history = tracked
    path = plot_training_curves({"tiny": history, "again": history}, tmp_path / "curves.png", title="tiny run")
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 600
    assert all(key in history[0] for curves in CURVE_PANELS.values() for key, _ in curves)
    # The recipe: the same figure from the run folders.
    plot_curves = load_recipe("plot_curves")
    drawn = plot_curves.main([str(out), str(out), "--names", "a", "b", "--output", str(tmp_path / "recipe.png")])
    assert matplotlib.image.imread(drawn).shape == image.shape
    assert plot_curves.run_name(tmp_path / "paper" / "seed_3") == "paper/seed_3"
