"""The AudioSet ontology's label distances, from its two files, with numpy alone.

The one home of the files' pins (URL, sha256, environment variable), of where they are looked for, of reading them
and of the hop distances OmAP and OBCE use: the self-contained `evaluate` module imports this file relatively, the
`spa-audio-tagging` package by its path (`modeling_spa.files.project_module`).

Distances are unweighted shortest paths on the undirected parent-child graph over every node (no virtual root,
restrictions ignored), restricted to the labels: 0..21 for the 527 AudioSet labels, the 22 levels of OmAP.
The files are CC BY-SA 4.0 data from Google, never shipped: they are found by an explicit path, an environment
variable or the cache, or downloaded from their pinned location by whoever can (the evaluate module through
evaluate's download manager, the package through its downloader).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
AUDIOSET_FILES = (ONTOLOGY_FILE, CLASS_LABELS_FILE)


def cache_dir() -> Path:
    """`$SPA_CACHE`, else `$XDG_CACHE_HOME/modeling_spa`, else `~/.cache/modeling_spa`."""
    if os.environ.get("SPA_CACHE"):
        return Path(os.environ["SPA_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "modeling_spa"


def local_file(spec: AudioSetFile, path: str | os.PathLike | None = None) -> Path | None:
    """The file of `spec` found without a download: `path`, else its environment variable, else the cache; None if
    neither is set and the cache has none. A path or variable that names no file is an error naming it."""
    for candidate, origin in ((path, "the given path"), (os.environ.get(spec.env_var), f"${spec.env_var}")):
        if candidate:
            candidate = Path(candidate)
            if not candidate.is_file():
                raise FileNotFoundError(f"{spec.filename}: {origin} points to {candidate}, which is not a file.")
            return candidate
    cached = cache_dir() / spec.filename
    return cached if cached.is_file() else None


def read_ontology(path: str | os.PathLike) -> list[dict]:
    """The nodes of `ontology.json` as its entries, checked: a list of objects with `id`, `name` and `child_ids`,
    unique ids, and children that are nodes. Errors name the file and the node."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a valid ontology JSON file ({err}).") from err
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON list of ontology nodes.")
    for i, entry in enumerate(raw):
        missing = {"id", "name", "child_ids"} - set(entry if isinstance(entry, dict) else ())
        if missing:
            raise ValueError(f"{path}: node #{i} lacks the field(s) {sorted(missing)}.")
    ids = [entry["id"] for entry in raw]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate node ids, e.g. {next(i for i in ids if ids.count(i) > 1)!r}.")
    known = set(ids)
    for entry in raw:
        for child in entry["child_ids"]:
            if child not in known:
                raise ValueError(f"{path}: node {entry['id']!r} lists unknown child {child!r}.")
    return raw


def read_class_labels(path: str | os.PathLike, known_ids: Sequence[str] | set[str]) -> tuple[list[str], list[str]]:
    """The mids and display names of `class_labels_indices.csv`, in its order; every mid must be a known node."""
    path, known_ids = Path(path), set(known_ids)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"index", "mid", "display_name"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected the header 'index,mid,display_name', got {reader.fieldnames}.")
        rows = list(reader)
    mids, names = [], []
    for position, row in enumerate(rows):
        if row["index"] != str(position):
            raise ValueError(f"{path}: row {position + 2} has index {row['index']!r}, expected {position}.")
        if row["mid"] not in known_ids:
            raise ValueError(f"{path}: label {row['mid']!r} ({row['display_name']}) is not in the ontology.")
        mids.append(row["mid"])
        names.append(row["display_name"])
    if len(set(mids)) != len(mids):
        raise ValueError(f"{path}: a mid appears twice.")
    return mids, names


def hop_distances(children: Mapping[str, Sequence[str]]) -> np.ndarray:
    """All-pairs hop distances on the undirected graph of `children` (node -> its children), nodes in the mapping's
    order. Breadth-first from every node at once: frontier k+1 is frontier k times the adjacency matrix."""
    order = {node: i for i, node in enumerate(children)}
    n = len(order)
    adjacency = np.zeros((n, n), dtype=np.float32)
    for node, kids in children.items():
        for child in kids:
            adjacency[order[node], order[child]] = adjacency[order[child], order[node]] = 1
    hops = np.where(np.eye(n, dtype=bool), 0, -1).astype(np.int64)
    frontier = np.eye(n, dtype=np.float32)
    for step in range(1, n):
        frontier = ((frontier @ adjacency) > 0) & (hops < 0)
        if not frontier.any():
            break
        hops[frontier] = step
        frontier = frontier.astype(np.float32)
    if (hops < 0).any():
        raise ValueError("The ontology graph is not connected: some nodes cannot reach each other.")
    return hops


def audioset_distances(ontology_path: str | os.PathLike, labels_path: str | os.PathLike) -> np.ndarray:
    """The (527, 527) distances between the AudioSet labels, in the order of `class_labels_indices.csv`."""
    nodes = read_ontology(ontology_path)
    children = {entry["id"]: entry["child_ids"] for entry in nodes}
    mids, _ = read_class_labels(labels_path, children.keys())
    index = {node: i for i, node in enumerate(children)}
    rows = np.array([index[mid] for mid in mids], dtype=np.int64)
    return hop_distances(children)[np.ix_(rows, rows)]
