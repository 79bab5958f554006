"""Label distances of a taxonomy, with numpy alone: the AudioSet ontology from its two files, or any hierarchy from a
JSON or CSV taxonomy file (or a {id: [children]} mapping).

The one home of the AudioSet files' pins (URL, sha256, environment variable), of where they are looked for, of reading
them, of reading and validating any taxonomy file, of matching class labels to a taxonomy's nodes, and of the hop
distances OmAP and OBCE use: the self-contained `evaluate` module imports this file relatively, the
`spa-audio-tagging` package by its path (`modeling_spa.files.project_module`).

Distances are unweighted shortest paths on the undirected parent-child graph over every node (no virtual root,
restrictions ignored), restricted to the labels: 0..21 for the 527 AudioSet labels, the 22 levels of OmAP.
The files are CC BY-SA 4.0 data from Google, never shipped: they are found by an explicit path, an environment
variable or the cache, or downloaded from their pinned location by whoever can (the evaluate module through
evaluate's download manager, the package through its downloader).
"""

from __future__ import annotations

import csv
import difflib
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


# -- any taxonomy: a JSON or CSV file, or a {id: [children]} mapping -------------------------------------------------
# A taxonomy file lists nodes: id, name, parents (ids; several allowed, none for a top-level node), and optionally a
# description. JSON: a list of such objects (`parents` a list or a ";"-joined string; `parent` too), or {"name": ...,
# "nodes": [...]}, or {id: [children ids]}; AudioSet's `child_ids` are read as well. CSV (TSV for .tsv): a header
# with `id` and `name`, optionally `parents` (ids joined by ";" or "|") and `description`. Errors name the rows (CSV:
# as a spreadsheet counts them, the header being row 1).
PARENT_SEPARATORS = (";", "|")
_SHOWN = 10  # problems listed in one error


@dataclass(frozen=True)
class TaxonomyEntry:
    """One node as a taxonomy file gives it, with `where` it was read (for error messages)."""

    id: str
    name: str
    parents: tuple[str, ...] = ()
    description: str = ""
    where: str = ""


def _split_ids(value) -> tuple[str, ...]:
    """Parent ids from a list or a string joined by one of PARENT_SEPARATORS; blanks dropped."""
    if value is None:
        return ()
    if isinstance(value, str):
        for separator in PARENT_SEPARATORS[1:]:
            value = value.replace(separator, PARENT_SEPARATORS[0])
        value = value.split(PARENT_SEPARATORS[0])
    return tuple(str(item).strip() for item in value if str(item).strip())


def _from_children(children: Mapping, origin: str) -> list[TaxonomyEntry]:
    """{id: [children]}: names are the ids; nodes named only as children are nodes too."""
    parents: dict[str, list[str]] = {str(node): [] for node in children}
    for node, kids in children.items():
        if isinstance(kids, str) or not isinstance(kids, Sequence):
            raise ValueError(f"{origin}: the children of {node!r} must be a list of ids, got {kids!r}.")
        for child in kids:
            parents.setdefault(str(child), []).append(str(node))
    return [TaxonomyEntry(node, node, tuple(ups), "", f"node {node!r}") for node, ups in parents.items()]


def _from_json_nodes(nodes: list, origin: str) -> list[TaxonomyEntry]:
    entries, children_of = [], {}
    for i, node in enumerate(nodes):
        where = f"node #{i}"
        if not isinstance(node, dict):
            raise ValueError(f"{origin}: {where} is not an object with 'id' and 'name'.")
        missing = [key for key in ("id", "name") if not str(node.get(key) or "").strip()]
        if missing:
            raise ValueError(f"{origin}: {where} has no {' and no '.join(repr(key) for key in missing)}.")
        node_id = str(node["id"]).strip()
        children_of[node_id] = _split_ids(node.get("child_ids", node.get("children")))
        description = str(node.get("description") or "").strip()
        where = f"{where} (id {node_id!r})"
        parents = _split_ids(node.get("parents", node.get("parent")))
        entries.append(TaxonomyEntry(node_id, str(node["name"]).strip(), parents, description, where))
    # AudioSet's ontology.json lists children: turn them into parent links.
    extra: dict[str, list[str]] = {}
    for parent, kids in children_of.items():
        for child in kids:
            extra.setdefault(child, []).append(parent)
    if unknown := [f"{entry.where}: child {child!r}" for entry in entries for child in children_of[entry.id]
                   if child not in children_of]:  # fmt: skip
        raise ValueError(f"{origin}: unknown child ids (children are given by id): {_listed(unknown)}.")
    merged = [tuple(dict.fromkeys(e.parents + tuple(extra.get(e.id, ())))) for e in entries]
    return [TaxonomyEntry(e.id, e.name, ups, e.description, e.where) for e, ups in zip(entries, merged, strict=True)]


def _from_csv(path: Path) -> list[TaxonomyEntry]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = [column.strip().lower() for column in next(reader, [])]
        if not {"id", "name"} <= set(header):
            raise ValueError(f"{path}: the header must have the columns 'id' and 'name' (and optionally 'parents', "
                             f"'description'); got {header}.")  # fmt: skip
        parents_column = "parents" if "parents" in header else "parent" if "parent" in header else None
        entries = []
        for number, values in enumerate(reader, start=2):
            if not any(value.strip() for value in values):
                continue
            row = dict(zip(header, (value.strip() for value in values), strict=False))
            where = f"row {number}"
            missing = [key for key in ("id", "name") if not row.get(key)]
            if missing:
                raise ValueError(f"{path}: {where} has no {' and no '.join(repr(key) for key in missing)}.")
            where = f"row {number} (id {row['id']!r})"
            parents = _split_ids(row.get(parents_column)) if parents_column else ()
            entries.append(TaxonomyEntry(row["id"], row["name"], parents, row.get("description", ""), where))
    return entries


def read_taxonomy(source) -> tuple[str, list[TaxonomyEntry]]:
    """(title, entries) of a taxonomy: a JSON/CSV/TSV file's path, or a {id: [children ids]} mapping; validated by
    `check_taxonomy`. The title is the JSON's "name", else the file's stem ("taxonomy" for a mapping)."""
    if isinstance(source, Mapping):
        entries, title, origin = _from_children(source, "the taxonomy mapping"), "taxonomy", "the taxonomy mapping"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Taxonomy file {path} does not exist.")
        origin, title = str(path), path.stem
        if path.suffix.lower() == ".json":
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}: not a valid JSON file ({err}).") from err
            if isinstance(raw, dict) and isinstance(raw.get("nodes"), list):
                title = str(raw.get("name") or title)
                entries = _from_json_nodes(raw["nodes"], origin)
            elif isinstance(raw, dict):
                entries = _from_children(raw, origin)
            elif isinstance(raw, list):
                entries = _from_json_nodes(raw, origin)
            else:
                raise ValueError(f"{path}: expected a list of nodes, {{'nodes': [...]}} or {{id: [children]}}.")
        elif path.suffix.lower() in (".csv", ".tsv"):
            entries = _from_csv(path)
        else:
            raise ValueError(f"{path}: a taxonomy file is .json, .csv or .tsv.")
    check_taxonomy(entries, origin)
    return title, entries


def _listed(problems: list[str]) -> str:
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return "; ".join(problems[:_SHOWN]) + more


def _duplicates(entries: list[TaxonomyEntry], key) -> list[str]:
    seen: dict[str, list[TaxonomyEntry]] = {}
    for entry in entries:
        seen.setdefault(key(entry), []).append(entry)
    return [" and ".join(e.where for e in group) for group in seen.values() if len(group) > 1]


def _cycle(entries: list[TaxonomyEntry]) -> list[TaxonomyEntry] | None:
    """One cycle of parent links (as entries, closing on the first), or None. Iterative depth-first search."""
    by_id = {entry.id: entry for entry in entries}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in by_id:
        if start in state:
            continue
        path, stack = [], [(start, iter(by_id[start].parents))]
        state[start] = 1
        path.append(start)
        while stack:
            node, parents = stack[-1]
            parent = next((p for p in parents if p in by_id and state.get(p) != 2), None)
            if parent is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(parent) == 1:
                loop = path[path.index(parent) :] + [parent]
                return [by_id[node_id] for node_id in loop]
            else:
                state[parent] = 1
                path.append(parent)
                stack.append((parent, iter(by_id[parent].parents)))
    return None


def _parts(entries: list[TaxonomyEntry]) -> list[list[TaxonomyEntry]]:
    """The connected parts of the undirected parent-child graph, in file order."""
    neighbours: dict[str, set[str]] = {entry.id: set() for entry in entries}
    for entry in entries:
        for parent in entry.parents:
            neighbours[entry.id].add(parent)
            neighbours[parent].add(entry.id)
    by_id, part_of, parts = {entry.id: entry for entry in entries}, {}, []
    for entry in entries:
        if entry.id in part_of:
            continue
        part, frontier = [], [entry.id]
        part_of[entry.id] = len(parts)
        while frontier:
            node = frontier.pop()
            part.append(by_id[node])
            for other in neighbours[node] - part_of.keys():
                part_of[other] = len(parts)
                frontier.append(other)
        parts.append(part)
    return parts


def check_taxonomy(entries: list[TaxonomyEntry], origin: str = "the taxonomy") -> None:
    """Raise a ValueError naming the rows of: duplicate ids, duplicate names (case- and space-insensitive), unknown
    parents, a cycle, or (in a taxonomy with parent links) parts that no path connects. A taxonomy without any parent
    link is a flat label list: valid, but without distances (`has_hierarchy`)."""
    if not entries:
        raise ValueError(f"{origin}: the taxonomy has no nodes.")
    if problems := _duplicates(entries, lambda e: e.id):
        raise ValueError(f"{origin}: duplicate ids: {_listed(problems)}.")
    if problems := _duplicates(entries, lambda e: " ".join(e.name.casefold().split())):
        raise ValueError(f"{origin}: duplicate names (each class needs its own name and label text): "
                         f"{_listed(problems)}.")  # fmt: skip
    ids, names = {entry.id for entry in entries}, [entry.name for entry in entries]
    unknown = [
        f"{entry.where}: parent {parent!r}" + _suggest(parent, [*ids, *names])
        for entry in entries
        for parent in entry.parents
        if parent not in ids
    ]
    if unknown:
        raise ValueError(f"{origin}: unknown parent ids (parents are given by id): {_listed(unknown)}.")
    if cycle := _cycle(entries):
        chain = " -> ".join(repr(entry.id) for entry in cycle)
        rows = ", ".join(entry.where for entry in cycle[:-1])
        raise ValueError(f"{origin}: the parent links form a cycle, {chain} (child -> parent; {rows}).")
    parts = _parts(entries)
    if has_hierarchy(entries) and len(parts) > 1:
        described = [
            f"{{{', '.join(repr(e.id) for e in part if not e.parents)}}} ({len(part)} node(s); top: "
            + ", ".join(e.where for e in part if not e.parents)
            + ")"
            for part in parts
        ]
        raise ValueError(
            f"{origin}: the hierarchy falls into {len(parts)} disconnected parts, with no path between them, so their "
            f"graph distances are undefined: {_listed(described)}. Give their top-level nodes a common parent (e.g. a "
            "root node 'all', listed as their parent)."
        )


def _suggest(label: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(label, known, n=3, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(label.casefold(), [k.casefold() for k in known], n=3, cutoff=0.6)
    return f" (closest known: {', '.join(map(repr, close))})" if close else ""


def has_hierarchy(entries: Sequence[TaxonomyEntry]) -> bool:
    """Whether any node has a parent: a taxonomy without parent links is a flat label list."""
    return any(entry.parents for entry in entries)


def taxonomy_children(entries: Sequence[TaxonomyEntry]) -> dict[str, list[str]]:
    """{id: [children ids]} in file order, the form `hop_distances` takes."""
    children: dict[str, list[str]] = {entry.id: [] for entry in entries}
    for entry in entries:
        for parent in entry.parents:
            children[parent].append(entry.id)
    return children


def class_ids(entries: Sequence[TaxonomyEntry], labels: Sequence, origin: str = "the taxonomy") -> list[str]:
    """Each label (a node's id, or its name, compared case- and space-insensitively) as its node's id. Every label
    that matches no node is listed in one ValueError, each with the closest known names."""
    by_id = {entry.id: entry.id for entry in entries}
    by_name = {" ".join(entry.name.casefold().split()): entry.id for entry in entries}
    found, unknown = [], []
    for label in labels:
        text = str(label).strip()
        node = by_id.get(text) or by_name.get(" ".join(text.casefold().split()))
        if node is None:
            unknown.append(f"{text!r}" + _suggest(text, [entry.name for entry in entries]))
        found.append(node)
    if unknown:
        unique = list(dict.fromkeys(unknown))
        raise ValueError(f"{len(unique)} label(s) are not in {origin} (by id or name): {_listed(unique)}.")
    return found


def leaves(entries: Sequence[TaxonomyEntry]) -> list[str]:
    """The ids of the nodes without children, in file order: a taxonomy file's classes by default."""
    parents = {parent for entry in entries for parent in entry.parents}
    return [entry.id for entry in entries if entry.id not in parents]


def taxonomy_distances(source, classes: Sequence | None = None) -> tuple[list[str], np.ndarray]:
    """(class ids, their (C, C) hop distances) of a taxonomy (`read_taxonomy`'s `source`). `classes`: ids or names in
    the order of the score columns (default: the leaves, in file order). A flat label list has no distances."""
    title, entries = read_taxonomy(source)
    if not has_hierarchy(entries):
        raise ValueError(
            f"The taxonomy {title!r} is a flat label list (no node has a parent): OmAP and OBCE weigh mistakes by "
            "graph distance in a hierarchy and need one. Give the classes parents (a `parents` column), or use mAP."
        )
    ids = class_ids(entries, classes, title) if classes is not None else leaves(entries)
    index = {entry.id: i for i, entry in enumerate(entries)}
    rows = np.array([index[node] for node in ids], dtype=np.int64)
    return ids, hop_distances(taxonomy_children(entries))[np.ix_(rows, rows)]
