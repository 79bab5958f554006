"""The house: what a checkpoint's remote code carries, and which room may import which (docs/architecture.md).

- The closure of the three `auto_map` files, computed with transformers' own `get_relative_import_files` (what
  `save_pretrained` copies into a checkpoint), equals a declared list, and none of its files imports anything that
  downloads, unpickles, decodes files or starts processes.
- Every import inside the package, at module level or inside a function, goes from a room to a lower one (or stays
  in its room): the model is imported by everything and imports nothing of the package beyond itself.
"""

import ast
import re
from pathlib import Path

import pytest
import tomllib
from transformers.dynamic_module_utils import get_relative_import_files

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "modeling_spa"
AUTO_MAP_FILES = ("configuration_spa.py", "modeling_spa.py", "feature_extraction_spa.py")
# The model: what builds it, runs it and computes its losses (DESIGN.md section 10). A new file here is a decision.
CLOSURE = {
    "augmentation.py",
    "backbone_ast.py",
    "backbone_cnn14.py",
    "backbone_demo_cnn.py",
    "backbone_htsat.py",
    "backbone_hub.py",
    "backbone_passt.py",
    "backbone_psla.py",
    "backbones.py",
    "configuration_spa.py",
    "feature_extraction_spa.py",
    "frontend.py",
    "frontends.py",
    "label_text.py",
    "losses.py",
    "modeling_spa.py",
    "waveforms.py",
    "windowing.py",
}
FORBIDDEN = ("pickle", "urllib", "zipfile", "tarfile", "http", "requests", "subprocess", "soundfile", "huggingface_hub")
# Rooms from the bottom up: a module may import its own room and rooms of a lower rank, never its rank or above.
RANKS = {
    "files": 0,
    "model": 0,
    "taxonomy": 1,
    "metrics": 2,
    "conversion": 3,
    "data": 3,
    "analysis": 4,
    "evaluation": 5,
    "hub": 5,
    "export": 6,
    "tagging": 6,
    "training": 6,
    "builds": 7,
    "cli": 8,
    "package": 9,  # __init__.py and the old paths' aliases: the façade on top
}


def closure() -> set[str]:
    files = set()
    for name in AUTO_MAP_FILES:
        files |= {Path(path).name for path in get_relative_import_files(str(PACKAGE / name))} | {name}
    return files


def test_the_checkpoint_carries_the_model_alone():
    assert closure() == CLOSURE
    pattern = re.compile(rf"^\s*(?:import|from)\s+({'|'.join(FORBIDDEN)})\b", re.M)
    offending = {name: pattern.findall((PACKAGE / name).read_text()) for name in CLOSURE}
    assert not {name: found for name, found in offending.items() if found}
    # Flat siblings only (transformers copies files by bare name, DESIGN.md section 10), and every flat file is the
    # model's: everything else lives in a room, so the listing shows the architecture.
    flat = {path.name for path in PACKAGE.glob("*.py")} - {"__init__.py", "_deprecated.py"}
    assert flat == CLOSURE, f"flat files outside the model: {sorted(flat - CLOSURE)}"


def room_of(module: str) -> str:
    """modeling_spa.x.y -> its room: a subpackage's name, "model" for the flat files, "package" for the façade."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "_deprecated"):
        return "package"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    if (PACKAGE / f"{parts[1]}.py").is_file():
        return "model"
    return "package"  # a name imported from the package itself (`from .. import SPAForAudioClassification`)


def package_imports(path: Path) -> set[str]:
    """The package modules `path` imports anywhere (module level or in a function), as dotted names."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        module = module.removesuffix(".__init__")
        package = module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {target} if node.module else {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "modeling_spa"}


def test_rooms_import_only_lower_rooms():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert rooms <= set(RANKS), f"a room without a rank: {sorted(rooms - set(RANKS))}"
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        for target in package_imports(path):
            room = room_of(target)
            if room != source and RANKS[room] >= RANKS[source]:
                upward.append(f"{path.relative_to(REPO)} ({source}) imports {target} ({room})")
    assert not upward, "\n".join(upward)


def test_the_wheel_lists_every_room():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    rooms = {f"modeling_spa.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert rooms | {"modeling_spa"} <= listed, sorted(rooms - listed)


@pytest.mark.parametrize("old", ["modeling_spa.diagnostics", "modeling_spa.checkpoints", "modeling_spa.ontology"])
def test_old_module_paths_still_import_with_a_warning(old):
    import importlib
    import sys

    from modeling_spa._deprecated import MOVED

    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} has moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])  # the same module, so the same classes
