"""The AudioSet ontology as data: nodes, the 527 labels, graph distances and label descriptions.

Distances are unweighted shortest paths on the *undirected* parent-child graph over all ontology nodes (no
virtual root, restrictions ignored), restricted to the labels. For the 527 AudioSet labels they range over
0..21, which gives the 22 levels of OmAP.

The two files (CC BY-SA 4.0 data from Google, never shipped with this package) are found, in order: an explicit
path, an environment variable ($SPA_ONTOLOGY, $SPA_CLASS_LABELS), the cache (`modeling_spa.files.cache_dir`), and
finally a download from their pinned location, verified by sha256. Their pins, their reading and the hop distances
are those of the OmAP evaluate module (`metrics/omap/ontology_distances.py`), which computes AudioSet OmAP on its own.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

from ..files import cache_dir, download
from ..label_text import DEFAULT_PROMPT
from .taxonomy import Taxonomy, TaxonomyNode, distances_module

_TRAILING_QUALIFIER = re.compile(r"\s*(\([^()]*\))$")
_LIST_OF_THINGS = re.compile(r"\band\b|\betc\.$")  # "Dishes, pots, and pans", "Bee, wasp, etc."


def _home():
    """The evaluate module's `ontology_distances.py`: pins, file reading, hop distances."""
    return distances_module()


ONTOLOGY_FILE = _home().ONTOLOGY_FILE
CLASS_LABELS_FILE = _home().CLASS_LABELS_FILE


def resolve(spec, path: str | os.PathLike | None = None) -> Path:
    """The local file of `spec` (`ONTOLOGY_FILE` or `CLASS_LABELS_FILE`): explicit path, environment variable,
    cache, else a download into the cache (pinned, sha256-checked; an error offline)."""
    found = _home().local_file(spec, path)
    if found is not None:
        return found
    how_else = f"Or pass its path, or set ${spec.env_var} to it."
    return download(spec.url, cache_dir() / spec.filename, spec.sha256, f"The AudioSet file {spec.filename}", how_else)


# A node of `ontology.json`, with parents derived from the other nodes' `child_ids` (the generic node type).
OntologyNode = TaxonomyNode


def _split_first_alias(name: str) -> tuple[str, str]:
    """`name` cut at its first comma outside parentheses: (first alias, rest); the rest is "" if none."""
    depth = 0
    for i, char in enumerate(name):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            return name[:i], name[i + 1 :].strip()
    return name, ""


def short_name(name: str, shared_first_aliases: Collection[str] = ()) -> str:
    """The first alias of an ontology name, when the rest only lists synonyms; otherwise the whole name.

    AudioSet names list synonyms after commas: "Male speech, man speaking" -> "Male speech",
    "Fire engine, fire truck (siren)" -> "Fire engine (siren)" (a trailing qualifier in parentheses belongs to
    the whole name and is kept). Commas inside parentheses do not split: "Roaring cats (lions, tigers)" stays.

    The name stays whole where the part after the first comma is not a synonym:
    - a qualifier: the first alias is shared with another ontology node (pass `shared_first_aliases`, see
      `AudioSetOntology.shared_first_aliases`; compared case-insensitively): "Inside, small room",
      "Inside, large room or hall", "Outside, rural or natural" would all be "Inside" or "Outside";
    - a list of several things: the rest joins items with "and" or ends with "etc.": "Dishes, pots, and pans",
      "Bee, wasp, etc.", "Channel, environment and background". This errs on the side of the whole name
      ("Velcro, hook and loop fastener", not a label, stays whole too).
    """
    first, rest = _split_first_alias(name)
    shared = {alias.casefold() for alias in shared_first_aliases}
    if not rest or first.casefold() in shared or _LIST_OF_THINGS.search(rest):
        return name
    qualifier = _TRAILING_QUALIFIER.search(rest)
    return first + (f" {qualifier.group(1)}" if qualifier else "")


def _read_nodes(path: Path) -> dict[str, OntologyNode]:
    raw = _home().read_ontology(path)
    parents: dict[str, list[str]] = {entry["id"]: [] for entry in raw}
    for entry in raw:
        for child in entry["child_ids"]:
            parents[child].append(entry["id"])
    return {
        entry["id"]: OntologyNode(
            id=entry["id"],
            name=entry["name"],
            description=entry.get("description", ""),
            children=tuple(entry["child_ids"]),
            parents=tuple(parents[entry["id"]]),
            restrictions=tuple(entry.get("restrictions", ())),
        )
        for entry in raw
    }


class AudioSetOntology(Taxonomy):
    """The AudioSet ontology graph and its labels, in the order of `class_labels_indices.csv`: a `Taxonomy` whose
    classes (`label_ids`, also `label_mids`) are the 527 labels, with AudioSet's short names (`name`).

    Use `AudioSetOntology.load()`; the files are found as the module docstring says.
    """

    def __init__(self, nodes: dict[str, OntologyNode], label_mids: Sequence[str], label_names: Sequence[str]):
        super().__init__(nodes, label_mids, title="AudioSet ontology", source="ontology.json")
        self.label_mids = self.label_ids
        self.label_names = list(label_names)

    @classmethod
    def load(
        cls, ontology_path: str | os.PathLike | None = None, labels_path: str | os.PathLike | None = None
    ) -> AudioSetOntology:
        """Load the ontology; see `resolve` for where the files come from."""
        return _load_cached(
            resolve(ONTOLOGY_FILE, ontology_path).resolve(), resolve(CLASS_LABELS_FILE, labels_path).resolve()
        )

    @classmethod
    def from_files(cls, ontology_path: str | os.PathLike, labels_path: str | os.PathLike) -> AudioSetOntology:
        nodes = _read_nodes(Path(ontology_path))
        return cls(nodes, *_home().read_class_labels(labels_path, nodes.keys()))

    def __repr__(self) -> str:
        counts = f"{len(self.nodes)} nodes, {len(self.label_mids)} labels, {len(self.top_level_mids)} top-level"
        return f"AudioSetOntology({counts})"

    def _set_labels(self, ids: list[str]) -> None:
        self.label_ids = self.label_mids = ids
        self.label_names = [self.nodes[mid].name for mid in ids]  # class_labels_indices.csv's names are the ontology's

    @property
    def top_level_mids(self) -> list[str]:
        return self.top_level_ids

    # -- label text ----------------------------------------------------------------------------------------------------
    @functools.cached_property
    def shared_first_aliases(self) -> frozenset[str]:
        """First aliases (casefolded) that start the names of several nodes, e.g. "inside" and "outside".

        After such an alias the comma introduces a qualifier, not a synonym ("Inside, small room"). A name with
        no comma is its own first alias, so "Foo, bar" would stay whole beside a node named "Foo".
        """
        counts = Counter(_split_first_alias(node.name)[0].casefold() for node in self.nodes.values())
        return frozenset(alias for alias, count in counts.items() if count > 1)

    def name(self, mid: str, name_style: str = "short") -> str:
        """The ontology name of `mid`: `full`, or `short`, the first alias where the rest lists synonyms.

        `short` is `short_name` with this ontology's `shared_first_aliases`: "Male speech, man speaking" ->
        "Male speech", while "Inside, small room" and "Dishes, pots, and pans" stay whole. For the 527 AudioSet
        labels every short name is distinct.
        """
        full = super().name(mid, name_style)
        return short_name(full, self.shared_first_aliases) if name_style == "short" else full

    def descriptions(
        self,
        style: str = "concat",
        mids: Sequence[str] | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        name_style: str = "short",
    ) -> list[str]:
        """Descriptions of `mids` (default: all labels in CSV order) in one style; see `Taxonomy.description`.

        For the 527 AudioSet labels every style and name_style gives 527 distinct texts (the ontology's description
        fields are all distinct too); `check_distinct_descriptions` guards other label sets.
        """
        return super().descriptions(style, mids, prompt_template, name_style)

    def _check_id(self, mid: str) -> None:
        if mid not in self.nodes:
            raise ValueError(f"Unknown AudioSet mid {mid!r}: it is not in the ontology.")


@functools.lru_cache(maxsize=8)
def _load_cached(ontology_path: Path, labels_path: Path) -> AudioSetOntology:
    return AudioSetOntology.from_files(ontology_path, labels_path)
