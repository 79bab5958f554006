"""Taxonomies from files: a JSON or CSV hierarchy (`read_taxonomy`), a flat label list, or AudioSet's ontology by name.

The reading and its validation are the evaluate module's (`metrics/omap/ontology_distances.py` `read_taxonomy`: one
parser for the metric and the package); this file turns the checked entries into a `Taxonomy`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .audioset import AudioSetOntology
from .taxonomy import Taxonomy, distances_module

AUDIOSET = "audioset"  # the name that selects the AudioSet ontology wherever a taxonomy is asked for


def read_taxonomy(path: str | os.PathLike | Mapping, classes: Sequence[str] | None = None) -> Taxonomy:
    """The taxonomy of a JSON or CSV file (id, name, parents, optional description; several parents allowed), or of a
    {id: [children ids]} mapping. Unknown parents, cycles, duplicate ids or names and disconnected parts are errors
    naming the rows. `classes`: ids or names of the classes, in output order (default: the leaves, in file order)."""
    title, entries = distances_module().read_taxonomy(path)
    taxonomy = Taxonomy.from_entries(entries, title, None if isinstance(path, Mapping) else Path(path).name)
    return taxonomy.with_labels(classes) if classes is not None else taxonomy


def read_label_list(path: str | os.PathLike) -> list[str]:
    """Class labels from a file: a JSON list of ids or names, a JSON object with "mids" (the demo builders'
    classes.json) or "classes", or a text file with one label per line."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw = raw.get("mids", raw.get("classes")) if isinstance(raw, dict) else raw
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"{path}: expected a JSON list of class ids or names (or an object with 'mids').")
        return [str(label) for label in raw]
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"{path}: no class labels (one per line).")
    return labels


def load_taxonomy(spec: str | os.PathLike | Taxonomy | None, classes: Sequence[str] | None = None) -> Taxonomy:
    """A taxonomy from what a user names: a `Taxonomy` as is, "audioset" (or None) for the AudioSet ontology, else a
    taxonomy file. `classes` (ids or names) become its classes, in that order."""
    if isinstance(spec, Taxonomy):
        taxonomy = spec
    elif spec is None or str(spec).lower() == AUDIOSET:
        taxonomy = AudioSetOntology.load()
    else:
        return read_taxonomy(spec, classes)
    return taxonomy.with_labels(classes) if classes is not None else taxonomy
