"""An ordinary install: the wheel, in a fresh virtual environment, trains, writes its card and installs the metric.

The wheel is built from this checkout and installed without dependencies into a new venv; the dependencies come
from the project's venv through a path entry (a `.pth` line adds the directory, but does not run the `.pth` files in
it, so the project's editable install stays invisible and `modeling_spa` is the wheel's own copy).
"""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

# A wheel built and installed into a new venv, then trained with: `make test-slow` (and CI).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["Siren", "White noise", "Dial tone"]


def run(command, cwd, env, timeout=300):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command[:3]}...\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", dist]
    run(command, dist, os.environ)
    return next(dist.glob("spa_audio_tagging-*.whl"))


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory):
    """(python of a new venv holding only the wheel, an environment for it, an empty working directory)."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, os.environ)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], root,
        os.environ)  # fmt: skip
    purelib = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(purelib.decode().strip(), "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(root / "modules"), "PYTHONUNBUFFERED": "1"}
    return python, env, work


def test_the_wheel_ships_every_room_the_templates_and_the_metric(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    project = ("hub_cards/model_card.md", "omap/omap.py", "omap/omap_core.py", "omap/ontology_distances.py",
               "omap/README.md")  # fmt: skip
    for name in [f"modeling_spa/_project/{name}" for name in project]:
        assert name in names, name
    rooms = {p.name for p in (REPO / "modeling_spa").iterdir() if (p / "__init__.py").is_file()}
    assert rooms and all(f"modeling_spa/{room}/__init__.py" in names for room in rooms)


def test_the_package_imported_is_the_wheel(fresh):
    python, env, work = fresh
    done = run([python, "-c", "import modeling_spa; print(modeling_spa.__file__)"], work, env)
    assert done.stdout.strip().startswith(str(python.parent.parent))


def test_metric_install_and_offline_load(fresh):
    python, env, work = fresh
    run([python.with_name("spa-install-metric")], work, env)
    for name in ("spa-audio-tagging/omap", "omap"):  # the bare name: a local alias in evaluate's cache
        code = (
            f"import evaluate; m = evaluate.load({name!r}); "
            "print(m.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[1, 0], [0, 1]], "
            "distances=[[0, 1], [1, 0]])['map'])"
        )
        assert run([python, "-c", code], work, env).stdout.strip().endswith("1.0")


def test_the_wheel_reads_its_project_folders_inside_the_package(fresh):
    """In a wheel the card templates and the OmAP home travel inside the package; the package finds them there."""
    python, env, work = fresh
    code = (
        "from modeling_spa.files import project_folder; from modeling_spa.metrics import average_precision; "
        "print(project_folder('hub_cards'), project_folder('metrics/omap'), "
        "average_precision([[1], [0]], [[0.9], [0.1]]))"
    )
    folders = run([python, "-c", code], work, env).stdout.split()
    assert all(str(python.parent.parent) in folder for folder in folders[:2]) and folders[2] == "[1.]"


def test_training_writes_its_model_card(fresh, tmp_path, ontology):
    python, env, work = fresh
    build = tmp_path / "tiny_build"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from build_demo_dataset import build_demo_dataset; "
        f"build_demo_dataset(sys.argv[2], 8, 4, 4, duration_s=0.5, class_names={CLASSES!r}, speech=False)"
    )
    run([python, "-c", code, str(REPO / "recipes"), str(build)], work, env)
    out = tmp_path / "run"
    command = [python, REPO / "recipes" / "train.py", "--backbone", "demo_cnn",
               "--audio_config", '{"hidden_sizes": [4], "num_mel_bins": 64}', "--projection_dim", "8",
               "--text_encoder", "sentence-transformers/all-MiniLM-L6-v2", "--dataset", str(build),
               "--classes", str(build / "classes.json"), "--max_length_s", "0.5", "--num_workers", "0",
               "--output_dir", str(out), "--num_epochs", "1", "--batch_size", "4", "--cpu"]  # fmt: skip
    run(command, work, env)
    card = (out / "model" / "README.md").read_text()
    assert "model-index" in card and "tiny_build" in card and str(tmp_path) not in card
    assert len(json.loads((out / "history.json").read_text())) == 1
