"""Locating the two AudioSet data files (ontology and 527-label index).

The files are CC BY-SA 4.0 data from Google and are never shipped with this package. They are found, in
order: an explicit path, an environment variable, the user cache, and finally a download from their
canonical public location, verified by sha256 before it is written to the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AudioSetFile:
    """One data file: its name in the cache, the variable that may point at it, where to download it."""

    filename: str
    env_var: str
    url: str
    sha256: str


ONTOLOGY_FILE = AudioSetFile(
    filename="ontology.json",
    env_var="SPA_ONTOLOGY",
    url="https://raw.githubusercontent.com/audioset/ontology/d417d32bf59c711abb5910fd2f76a0eb44697991/ontology.json",
    sha256="9c685f4403eecc3ca9be37fd7285cf212feaaea6ff7229d3e7ca89e0d1f2d15d",
)
CLASS_LABELS_FILE = AudioSetFile(
    filename="class_labels_indices.csv",
    env_var="SPA_CLASS_LABELS",
    url="https://raw.githubusercontent.com/qiuqiangkong/audioset_tagging_cnn/"
    "d2f4b8c18eab44737fcc0de1248ae21eb43f6aa4/metadata/class_labels_indices.csv",
    sha256="cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429",
)

_DOWNLOAD_TIMEOUT_S = 30


def cache_dir() -> Path:
    """`$SPA_CACHE`, else `$XDG_CACHE_HOME/modeling_spa`, else `~/.cache/modeling_spa`."""
    if os.environ.get("SPA_CACHE"):
        return Path(os.environ["SPA_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "modeling_spa"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("HF_HUB_OFFLINE", "SPA_OFFLINE"))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _how_to_provide(spec: AudioSetFile) -> str:
    return (
        f"pass its path explicitly, set ${spec.env_var}, place it at {cache_dir() / spec.filename}, "
        f"or allow a download from {spec.url} (unset HF_HUB_OFFLINE/SPA_OFFLINE)"
    )


def download(spec: AudioSetFile) -> Path:
    """Fetch `spec` from its canonical URL, check its sha256, and write it atomically into the cache."""
    try:
        with urllib.request.urlopen(spec.url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except OSError as err:
        raise FileNotFoundError(
            f"Could not download the AudioSet file {spec.filename} ({err}). To use it offline, " + _how_to_provide(spec)
        ) from err
    digest = sha256_of(data)
    if digest != spec.sha256:
        raise ValueError(
            f"Downloaded {spec.filename} from {spec.url} has sha256 {digest}, expected {spec.sha256}; "
            "refusing to use it."
        )
    target = cache_dir() / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so an interrupted download never leaves a truncated file in the cache.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        tmp.write(data)
    os.replace(tmp.name, target)
    return target


def resolve(spec: AudioSetFile, path: str | os.PathLike | None = None) -> Path:
    """Find `spec`: explicit path, then environment variable, then cache, then download."""
    for candidate, origin in ((path, "the given path"), (os.environ.get(spec.env_var), f"${spec.env_var}")):
        if candidate:
            candidate = Path(candidate)
            if not candidate.is_file():
                raise FileNotFoundError(f"{spec.filename}: {origin} points to {candidate}, which is not a file.")
            return candidate
    cached = cache_dir() / spec.filename
    if cached.is_file():
        return cached
    if _offline():
        raise FileNotFoundError(
            f"The AudioSet file {spec.filename} was not found and downloads are off. To provide it, "
            + _how_to_provide(spec)
        )
    return download(spec)
