"""docs/fine-tune.md runs as written: every bash and python block of the page, in order, on a tiny folder of real
recordings (tests/real_folder.py), from a workspace laid out as the repository root (recipes/ linked in). The source
checkpoint the page fine-tunes (`make demo`'s model) is stood in for by a small SPA model of AudioSet classes; the
push, which needs the network, must get as far as the network."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from real_folder import make_audiofolder, make_real_folder

from modeling_spa import SPAForAudioClassification
from modeling_spa.metrics.evaluate_module import install_omap_metric

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "fine-tune.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str]]:
    return [(kind, code) for kind, code in BLOCK.findall(PAGE.read_text())]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ontology, mid_of):
    root = tmp_path_factory.mktemp("workspace")
    make_real_folder(root, "my_sounds")
    make_audiofolder(root, "my_new_sounds")
    (root / "recipes").symlink_to(REPO / "recipes")
    mids = [mid_of[name] for name in ("Speech", "Dog", "Cat", "Bass drum", "Snare drum")]
    source = SPAForAudioClassification.from_backbone(
        "demo_cnn", {"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.1}, label_mids=mids, ontology=ontology,
        text_encoder="sentence-transformers/all-MiniLM-L6-v2", projection_dim=16, frontend=None,
    )  # fmt: skip
    source.save_pretrained(root / "outputs" / "demo" / "spa" / "seed_0" / "model")
    install_omap_metric(hf_modules_cache=root / "modules", bare_alias=False)
    return root


def run_block(kind: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"  # python, spa-*, hf
    environment |= {"HF_MODULES_CACHE": str(cwd / "modules"), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=1200)


def test_the_page_has_the_users_path():
    commands = " ".join(code for _, code in blocks())
    for step in ("spa-taxonomy", "recipes/train.py", "recipes/evaluate.py", "recipes/cross_validate.py",
                 "omap.compute", "hf upload"):  # fmt: skip
        assert step in commands, step


@pytest.mark.slow
def test_every_command_of_the_page_runs_as_written(workspace):
    for kind, code in blocks():
        done = run_block(kind, code, workspace)
        output = done.stdout + done.stderr
        if code.startswith("hf upload"):  # offline here: it must fail at the network, not at its arguments
            assert done.returncode == 1 and "offline mode is enabled" in output, output[-3000:]
            continue
        assert done.returncode == 0, f"{code}\n{output[-4000:]}"
        if "spa-taxonomy" in code:
            assert "Kick drum" in output and "Everything > Drum kit > Kick drum" in output
        if kind == "python":
            assert re.search(r"mAP \d\.\d{3}, OmAP \d\.\d{3}", done.stdout), done.stdout
    model = workspace / "outputs" / "my-sounds" / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification" and config["label_mids"] == [
        "dog", "cat", "kick", "snare"]  # fmt: skip
    card = (model / "README.md").read_text()
    assert "| taxonomy | taxonomy (7 nodes, a hierarchy, from `taxonomy.csv`) |" in card
    assert "| Dog | Dog |" in card or "| Dog | Everything > Pets > Dog |" in card  # the checkpoint's style: concat
    results = json.loads((workspace / "outputs" / "my-sounds-eval" / "results.json").read_text())
    assert results["n_clips"] == 16 and {"accuracy", "map", "omap"} <= set(results)
    cv = json.loads((workspace / "outputs" / "my-sounds-cv" / "cv_results.json").read_text())
    assert cv["summary"]["folds"] == ["1", "2"] and {"accuracy", "map", "omap"} <= set(cv["summary"])
