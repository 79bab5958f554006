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
from modeling_spa.metrics.evaluate_module import OMAP_MODULE_ID, install_omap_metric, publish_omap_metric

REPO = Path(__file__).resolve().parent.parent


def case():
    rng = np.random.default_rng(3)
    references = (rng.random((40, 5)) < 0.3).astype(int)
    references[0] = 1
    references[np.arange(40), rng.integers(0, 5, 40)] = 1  # every clip has a label (no label-less warning)
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


# evaluate alone: the package is blocked, as where only `evaluate` is installed (a Hub Space, a user's machine).
WITHOUT_PACKAGE = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_spa" or name.startswith("modeling_spa."):
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, Block())
import evaluate
args = json.loads(sys.argv[1])
metric = evaluate.load(args["id"])
result = metric.compute(predictions=args["predictions"], references=args["references"], distances=args["distances"])
try:
    metric.compute(predictions=args["predictions"], references=args["references"])
except ValueError as err:
    result["error_without_distances"] = str(err)
print(json.dumps(result))
"""


def test_installed_module_loads_offline_by_id_without_the_package(tmp_path):
    modules = tmp_path / "modules"
    installed = install_omap_metric(hf_modules_cache=modules)
    assert installed.is_file() and installed.with_name("omap_core.py").is_file()
    assert f"metrics{os.sep}spa-audio-tagging--omap" in str(installed)  # the project's namespace
    assert not list(modules.rglob("evaluate-metric--*"))  # never evaluate's official one
    empty = tmp_path / "empty"
    empty.mkdir()
    references, predictions, distances = case()
    args = {"id": OMAP_MODULE_ID, "predictions": predictions.tolist(), "references": references.tolist()}
    env = {**os.environ, "HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PACKAGE, json.dumps(args | {"distances": distances})],
        cwd=empty, env={k: v for k, v in env.items() if k != "PYTHONPATH"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert_same(result, compute_omap(references, predictions, distances))
    assert "pass `distances`" in result["error_without_distances"]


def test_official_namespaces_are_refused():
    for module_id in ("evaluate-metric/omap", "evaluate-measurement/omap", "omap"):
        with pytest.raises(ValueError, match="namespace|owner/name"):
            install_omap_metric(module_id)


def test_publish_uploads_the_space(monkeypatch):
    import huggingface_hub

    calls = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.update(repo=kw))
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(upload=kw) or "https://hub/commit/2"
    )
    assert publish_omap_metric("org/omap") == "https://hub/commit/2"
    assert calls["repo"] == {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}
    upload = calls["upload"]
    assert upload["repo_id"] == "org/omap" and upload["repo_type"] == "space"
    folder = Path(upload["folder_path"])
    for name in upload["allow_patterns"]:  # every file of the Space exists, the core beside the module
        assert (folder / name).is_file(), name
    assert {"omap.py", "omap_core.py", "app.py", "README.md"} <= set(upload["allow_patterns"])


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
