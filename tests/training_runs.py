"""Helpers for tests that run recipes/train.py and other scripts: the tiny dataset's classes, its extra rows, the
training command, a process-group-safe runner and the 2-process launcher."""

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
from conftest import REPO, free_port
from recipe_loader import load_recipe  # noqa: F401 - re-exported for the tests that run recipes

CLASSES = ["Siren", "Police car (siren)", "Civil defense siren", "White noise", "Pink noise", "Dial tone", "Tick"]


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def with_rows(split: datasets.Dataset, rows: list[dict]) -> datasets.Dataset:
    """`split` plus `rows`: built as a plain {bytes, path} struct, then cast (encoding Audio needs torchcodec)."""
    struct = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    extra = datasets.Dataset.from_list(rows, features=datasets.Features({**split.features, "audio": struct}))
    return datasets.concatenate_datasets([split, extra.cast_column("audio", split.features["audio"])])


def train_command(dataset_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "recipes" / "train.py"),
        "--backbone", "demo_cnn",
        "--frontend", "tiny",
        "--audio_config", '{"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.2}',
        "--projection_dim", "16",
        "--text_encoder", "sentence-transformers/all-MiniLM-L6-v2",
        "--dataset", str(dataset_dir),
        "--classes", str(dataset_dir / "classes.json"),
        "--max_length_s", "1.0",
        "--num_workers", "0",
        "--output_dir", str(output_dir),
        "--num_epochs", "3",
        "--batch_size", "4",
        "--eval_batch_size", "8",
        "--checkpointing_steps", "2",
        "--learning_rate", "0.003",
        "--cpu",
        *extra,
    ]  # fmt: skip


def run(command, cwd, timeout=300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout, kill the whole group (launcher and ranks) and fail.
    `env`: variables to add to (or replace in) this process's environment."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"} | (env or {})
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # no orphan rank survives a failed test
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... did not finish in {timeout} s; its output ends:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def launch_command() -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", free_port()]  # fmt: skip
