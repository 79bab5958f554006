import json
import os
import subprocess
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
from conftest import free_port

from modeling_spa.metrics import compute_omap
from modeling_spa.omap_module import install_omap_metric

REPO = Path(__file__).resolve().parent.parent


def case():
    rng = np.random.default_rng(3)
    references = (rng.random((40, 5)) < 0.3).astype(int)
    references[0] = 1
    predictions = np.round(rng.random((40, 5)), 2)
    distances = [[abs(i - j) for j in range(5)] for i in range(5)]
    return references, predictions, distances


def assert_same(result, expected):
    assert result["map"] == pytest.approx(expected["map"], abs=1e-15)
    assert result["omap"] == pytest.approx(expected["omap"], abs=1e-15)
    np.testing.assert_allclose(result["omap_per_lambda"], expected["omap_per_lambda"], atol=1e-15)
    np.testing.assert_allclose(result["omap_ap_per_class"], expected["omap_ap_per_class"], atol=1e-15)


def test_load_from_repo_root_matches_the_core(monkeypatch):
    monkeypatch.chdir(REPO)
    references, predictions, distances = case()
    metric = evaluate.load("metrics/omap")
    assert_same(
        metric.compute(predictions=predictions, references=references, distances=distances),
        compute_omap(references, predictions, distances),
    )


def test_add_batch_then_compute():
    references, predictions, distances = case()
    metric = evaluate.load(str(REPO / "metrics" / "omap"))
    for start in range(0, 40, 7):
        metric.add_batch(predictions=predictions[start : start + 7], references=references[start : start + 7])
    assert_same(metric.compute(distances=distances), compute_omap(references, predictions, distances))


def test_load_by_name_offline_from_an_empty_directory(tmp_path):
    modules = tmp_path / "modules"
    installed = install_omap_metric(hf_modules_cache=modules)
    assert installed.is_file() and "evaluate-metric--omap" in str(installed)
    empty = tmp_path / "empty"
    empty.mkdir()
    references, predictions, distances = case()
    code = (
        "import json, evaluate; m = evaluate.load('omap'); "
        f"r = m.compute(predictions={predictions.tolist()}, references={references.tolist()}, distances={distances}); "
        "print(json.dumps(r))"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_same(json.loads(done.stdout.strip().splitlines()[-1]), compute_omap(references, predictions, distances))


def test_two_process_accelerate_gathers_then_computes(tmp_path):
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        free_port(),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "tests" / "scripts" / "distributed_omap.py"),
        str(out),
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["processes"] == 2
    assert_same(result["distributed"], result["single"])
