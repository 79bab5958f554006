"""Local files: hashing, atomic JSON, the cache folder, and the project folders read as data."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

_CHUNK = 1 << 20
_PACKAGE = Path(__file__).resolve().parent.parent  # modeling_spa/
# In a wheel the project folders travel inside the package (pyproject's package-dir: modeling_spa/_project/<name>);
# in a checkout, and so in an editable install, they are the repository's own top-level folders.
_PROJECT_FOLDERS = {"metrics/omap": "_project/omap", "hub_cards": "_project/hub_cards"}


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, value, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write `value` as JSON through a temporary file and a rename: a reader never sees half a file, and a process
    killed while writing leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n"
    return replace_atomically(path, lambda tmp: tmp.write(text.encode("utf-8")))


def replace_atomically(path: str | os.PathLike, write) -> Path:
    """`write(binary file)` into a temporary file beside `path`, then a rename onto it: readers see the old file or
    the new one, never half of it. The file gets the mode open() would give (a temporary file is private, 0600)."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False) as f:
        write(f)
    mask = os.umask(0)  # the only way to read the umask is to set it; set back at once
    os.umask(mask)
    os.chmod(f.name, 0o666 & ~mask)
    os.replace(f.name, path)
    return path


def cache_dir() -> Path:
    """`$SPA_CACHE`, else `$XDG_CACHE_HOME/modeling_spa`, else `~/.cache/modeling_spa`: the rule of the evaluate
    module too (`metrics/omap/ontology_distances.py`, which must find the same ontology files on its own)."""
    return Path(project_module("ontology_distances").cache_dir())


def project_folder(name: str) -> Path:
    """A project folder the package reads as data: `metrics/omap` (the evaluate module, the home of OmAP and AP) or
    `hub_cards` (the card templates). The one way the package finds them, in a checkout and in a wheel alike."""
    if name not in _PROJECT_FOLDERS:
        raise ValueError(f"Unknown project folder {name!r}; known: {sorted(_PROJECT_FOLDERS)}.")
    for folder in (_PACKAGE.parent / name, _PACKAGE / _PROJECT_FOLDERS[name]):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"{name} is neither beside the package ({_PACKAGE.parent / name}) nor inside it ({_PACKAGE / name}): "
        "reinstall spa-audio-tagging."
    )


def project_module(name: str) -> ModuleType:
    """A module of the evaluate module's folder (`metrics/omap/<name>.py`, numpy only), imported once by its path.

    Those files are the one home of OmAP, average precision and the ontology distances: the self-contained evaluate
    module imports them relatively, the package through this function.
    """
    qualified = f"modeling_spa._project.{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, project_folder("metrics/omap") / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module  # before running it: dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules[qualified]
