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
from collections import Counter, deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import cache_dir, download, project_module
from ..label_text import CONCAT_SEPARATOR, DEFAULT_PROMPT, DESCRIPTION_STYLES

_TRAILING_QUALIFIER = re.compile(r"\s*(\([^()]*\))$")
_LIST_OF_THINGS = re.compile(r"\band\b|\betc\.$")  # "Dishes, pots, and pans", "Bee, wasp, etc."


def _home():
    """The evaluate module's `ontology_distances.py`: pins, file reading, hop distances."""
    return project_module("ontology_distances")


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


@dataclass(frozen=True)
class OntologyNode:
    """One node of `ontology.json`, with parents derived from the other nodes' `child_ids`."""

    id: str
    name: str
    description: str
    children: tuple[str, ...]
    parents: tuple[str, ...]
    restrictions: tuple[str, ...]


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


def check_distinct_descriptions(texts: Sequence[str], names: Sequence[str]) -> None:
    """Raise a ValueError naming the classes (`names`, one per text) that share a description.

    SPA pulls each clip towards the text of its labels: classes with one text would get one target. Texts are
    compared case- and whitespace-insensitively, as an uncased text encoder (bert-base-uncased) sees them.
    """
    classes: dict[str, list[str]] = {}
    for text, name in zip(texts, names, strict=True):
        classes.setdefault(" ".join(text.casefold().split()), []).append(name)
    clashes = [(text, group) for text, group in classes.items() if len(group) > 1]
    if clashes:
        shown = "; ".join(f"{text!r} for {' / '.join(map(repr, group))}" for text, group in clashes[:5])
        raise ValueError(
            f"{len(clashes)} label description(s) shared by several classes: {shown}. SPA would give those classes"
            " one text target: use another description style (e.g. 'desc') or name_style='full'."
        )


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


class AudioSetOntology:
    """The AudioSet ontology graph and its labels, in the order of `class_labels_indices.csv`.

    Use `AudioSetOntology.load()`; the files are found as the module docstring says.
    """

    def __init__(self, nodes: dict[str, OntologyNode], label_mids: Sequence[str], label_names: Sequence[str]):
        self.nodes = nodes
        self.label_mids = list(label_mids)
        self.label_names = list(label_names)
        self._order = {node_id: i for i, node_id in enumerate(nodes)}

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

    # -- graph ---------------------------------------------------------------------------------------------
    @property
    def top_level_mids(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if not node.parents]

    @functools.cached_property
    def _depths(self) -> dict[str, int]:
        """Length of the shortest downward path from any top-level node (breadth-first from all of them)."""
        depth = {node_id: 0 for node_id in self.top_level_mids}
        queue = deque(depth)
        while queue:
            node_id = queue.popleft()
            for child in self.nodes[node_id].children:
                if child not in depth:
                    depth[child] = depth[node_id] + 1
                    queue.append(child)
        unreachable = set(self.nodes) - set(depth)
        if unreachable:
            raise ValueError(
                f"Ontology nodes not reachable from any top-level node (a cycle?): {sorted(unreachable)[:5]}"
            )
        return depth

    def path_to_top(self, mid: str) -> list[str]:
        """The shortest upward path from `mid` to a top-level node, top first.

        Tie-break, deterministic: at every step up, take the parent closest to the top; among equally close
        parents, the one listed first in `ontology.json`. E.g. "Growling" has four parents at equal depth
        (Dog, Cat, Roaring cats, Canidae) and goes through Dog, which comes first in the file.
        """
        self._check_mid(mid)
        path = [mid]
        while self.nodes[path[-1]].parents:
            parents = self.nodes[path[-1]].parents
            path.append(min(parents, key=lambda p: (self._depths[p], self._order[p])))
        return path[::-1]

    def depth(self, mid: str) -> int:
        """The length of the shortest path down from a top-level node (top-level nodes: 0; "Dog": 2)."""
        self._check_mid(mid)
        return self._depths[mid]

    def ancestors(self, mid: str) -> set[str]:
        """Every node above `mid` through any of its parents (38 nodes have several), `mid` excluded."""
        self._check_mid(mid)
        found, stack = set(), list(self.nodes[mid].parents)
        while stack:
            node_id = stack.pop()
            if node_id not in found:
                found.add(node_id)
                stack.extend(self.nodes[node_id].parents)
        return found

    def top_level(self, mid: str) -> str:
        """The top-level category of `mid` (the first node of `path_to_top`)."""
        return self.path_to_top(mid)[0]

    @functools.cached_property
    def node_distances(self) -> np.ndarray:
        """All-pairs hop distances on the undirected graph over every node, in ontology file order."""
        return _home().hop_distances({node_id: node.children for node_id, node in self.nodes.items()})

    def distances_for(self, mids: Sequence[str]) -> np.ndarray:
        """The sub-matrix of full-graph distances for `mids`, in the given order."""
        for mid in mids:
            self._check_mid(mid)
        index = np.array([self._order[mid] for mid in mids], dtype=np.int64)
        return self.node_distances[np.ix_(index, index)]

    @functools.cached_property
    def distances(self) -> np.ndarray:
        """The C x C label distance matrix (CSV order): symmetric, zero diagonal, max 21 for AudioSet."""
        matrix = self.distances_for(self.label_mids)
        matrix.setflags(write=False)
        return matrix

    # -- label text ----------------------------------------------------------------------------------------
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
        self._check_mid(mid)
        if name_style not in ("short", "full"):
            raise ValueError(f"Unknown name_style {name_style!r}; use 'short' or 'full'.")
        full = self.nodes[mid].name
        return short_name(full, self.shared_first_aliases) if name_style == "short" else full

    def description(
        self, mid: str, style: str = "concat", prompt_template: str = DEFAULT_PROMPT, name_style: str = "short"
    ) -> str:
        """The language description of one class (SPA paper, section 3.1).

        - `direct`: the name, "Male speech"
        - `prompt`: `prompt_template` filled with the name, "the sound of Male speech"
        - `desc`: the ontology's description field
        - `concat`: `path_to_top` names joined by " > ", "Human sounds > Human voice > Speech > Male speech"

        For the 527 AudioSet labels every style and name_style gives 527 distinct texts (the ontology's
        description fields are all distinct too); `check_distinct_descriptions` guards other label sets.
        """
        if style == "direct":
            return self.name(mid, name_style)
        if style == "prompt":
            if "{label}" not in prompt_template:
                raise ValueError(f"prompt_template {prompt_template!r} must contain '{{label}}'.")
            return prompt_template.format(label=self.name(mid, name_style))
        if style == "desc":
            self._check_mid(mid)
            return self.nodes[mid].description.strip() or self.name(mid, name_style)
        if style == "concat":
            return CONCAT_SEPARATOR.join(self.name(node, name_style) for node in self.path_to_top(mid))
        raise ValueError(f"Unknown description style {style!r}; choose one of {DESCRIPTION_STYLES}.")

    def descriptions(
        self,
        style: str = "concat",
        mids: Sequence[str] | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        name_style: str = "short",
    ) -> list[str]:
        """Descriptions of `mids` (default: all labels in CSV order) in one style; see `description`."""
        return [
            self.description(mid, style, prompt_template, name_style)
            for mid in (self.label_mids if mids is None else mids)
        ]

    def _check_mid(self, mid: str) -> None:
        if mid not in self.nodes:
            raise ValueError(f"Unknown AudioSet mid {mid!r}: it is not in the ontology.")


@functools.lru_cache(maxsize=8)
def _load_cached(ontology_path: Path, labels_path: Path) -> AudioSetOntology:
    return AudioSetOntology.from_files(ontology_path, labels_path)
