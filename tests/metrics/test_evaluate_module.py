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

REPO = Path(__file__).resolve().parents[2]


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
args = json.loads(open(sys.argv[1]).read())
metric = evaluate.load(args["id"])
result = {}
if args.get("distances") is not None:
    result = metric.compute(predictions=args["predictions"], references=args["references"], distances=args["distances"])
try:
    result["audioset"] = metric.compute(predictions=args["predictions"], references=args["references"])
except ValueError as err:
    result["error_without_distances"] = str(err)
print(json.dumps(result))
"""


def run_without_package(args: dict, modules: Path, cwd: Path, **env) -> dict:
    """`WITHOUT_PACKAGE` offline in a fresh process, evaluate's module cache at `modules`."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPA_ONTOLOGY", "SPA_CLASS_LABELS")}
    environment = base | {"HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"} | env
    arguments = cwd / "arguments.json"
    arguments.write_text(json.dumps(args))
    done = subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE, str(arguments)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_installed_module_loads_offline_by_id_and_bare_name_without_the_package(tmp_path):
    modules = tmp_path / "modules"
    installed = install_omap_metric(hf_modules_cache=modules)
    for path in installed:
        assert path.is_file() and path.with_name("omap_core.py").is_file()
        assert path.with_name("ontology_distances.py").is_file()
    assert [f"metrics{os.sep}{name}--omap" in str(path) for path, name in
            zip(installed, ("spa-audio-tagging", "evaluate-metric"), strict=True)] == [True, True]  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    references, predictions, distances = case()
    for module_id in (OMAP_MODULE_ID, "omap"):
        args = {"id": module_id, "predictions": predictions.tolist(), "references": references.tolist()}
        result = run_without_package(args | {"distances": distances}, modules, empty, SPA_CACHE=str(empty))
        assert_same(result, compute_omap(references, predictions, distances))
        # Without distances it would score the AudioSet ontology, whose files are neither set nor cached here.
        assert "SPA_ONTOLOGY" in result["error_without_distances"], result["error_without_distances"]


def test_installing_into_another_cache_leaves_this_process_loading_from_evaluates(tmp_path):
    """An install into another cache (`install_omap_metric(hf_modules_cache=...)`, as tests do) used to leave it on
    sys.path, where this process's next evaluate.load imported `evaluate_modules` from it and missed its own module."""
    search_path = list(sys.path)
    install_omap_metric(hf_modules_cache=tmp_path / "modules")
    assert sys.path == search_path
    references, predictions, distances = case()
    metric = evaluate.load(str(REPO / "metrics" / "omap"))
    assert_same(metric.compute(predictions=predictions, references=references, distances=distances),
                compute_omap(references, predictions, distances))  # fmt: skip


def test_module_computes_audioset_omap_without_the_package(tmp_path, shared_audioset):
    """527 columns and no `distances`: the module finds the ontology files as the library does and builds the
    distances itself, equal to the package's (the 22 levels of the real ontology)."""
    modules = tmp_path / "modules"
    install_omap_metric(hf_modules_cache=modules)
    rng = np.random.default_rng(5)
    references = (rng.random((60, 527)) < 0.02).astype(int)
    references[np.arange(60), rng.integers(0, 527, 60)] = 1
    predictions = np.round(rng.random((60, 527)) + 0.5 * references, 3)
    args = {"id": "omap", "predictions": predictions.tolist(), "references": references.tolist()}
    env = {"SPA_ONTOLOGY": str(shared_audioset / "ontology.json"),
           "SPA_CLASS_LABELS": str(shared_audioset / "class_labels_indices.csv")}  # fmt: skip
    with pytest.warns(UserWarning, match="no positive clip"):  # most of the 527 classes have no positive here
        expected = compute_omap(references, predictions)
    result = run_without_package(args, modules, tmp_path, **env)["audioset"]
    assert len(result["omap_per_lambda"]) == 22
    assert_same(result, expected)


class FakeDownloads:
    """evaluate's download manager with the network replaced: `download(url)` gives a local file's copy."""

    def __init__(self, served: dict[str, bytes], folder: Path):
        self.served, self.folder, self.requested = served, folder, []

    def download(self, url: str) -> str:
        self.requested.append(url)
        path = self.folder / f"download-{len(self.requested)}"
        path.write_bytes(self.served[url])
        return str(path)


def test_module_fetches_missing_ontology_files_through_evaluates_download_manager(
    tmp_path, monkeypatch, shared_audioset
):
    monkeypatch.delenv("SPA_ONTOLOGY", raising=False)
    monkeypatch.delenv("SPA_CLASS_LABELS", raising=False)
    monkeypatch.setenv("SPA_CACHE", str(tmp_path / "empty-cache"))
    module = evaluate.load(str(REPO / "metrics" / "omap"))
    home = sys.modules[type(module).__module__]
    files = {spec.url: (shared_audioset / spec.filename).read_bytes() for spec in home.AUDIOSET_FILES}
    downloads = FakeDownloads(files, tmp_path)
    module._download_and_prepare(downloads)
    assert sorted(downloads.requested) == sorted(files)  # both pinned URLs, nothing else
    distances = module._audioset_distances(527)
    assert distances.shape == (527, 527) and distances.max() == 21
    # A download that is not the pinned file is refused, and the error reaches the first compute that needs it.
    module._download_and_prepare(FakeDownloads(dict.fromkeys(files, b"[]"), tmp_path))
    with pytest.raises(ValueError, match="sha256.*SPA_ONTOLOGY|could not be found or fetched"):
        module._audioset_distances(527)


def test_official_namespaces_are_refused_as_ids():
    # The bare name is a local alias in evaluate's cache, never a module id of its own.
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
    assert {"omap.py", "omap_core.py", "ontology_distances.py", "app.py", "README.md"} <= set(upload["allow_patterns"])


@pytest.mark.slow
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
