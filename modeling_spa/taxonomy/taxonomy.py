"""A taxonomy: the classes, their hierarchy and their texts, as data. The AudioSet ontology is one (`audioset.py`); any
hierarchy read from a JSON or CSV file is another (`files.read_taxonomy`), and so is a flat label list.

Everything SPA and OmAP need comes from it, the same way for every taxonomy: the label texts in the four styles of the
SPA paper (direct, prompt, desc, concat path), the hop distances between classes (OmAP, OBCE), and the mapping of the
labels a dataset uses, by id or by name, to the classes.

Distances are unweighted shortest paths on the *undirected* parent-child graph over every node (no virtual root),
restricted to the classes; their one implementation is `hop_distances` of the evaluate module's
`metrics/omap/ontology_distances.py`, as is the reading and validation of taxonomy files and the matching of labels.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..files import project_module
from ..label_text import CONCAT_SEPARATOR, DEFAULT_PROMPT, DESCRIPTION_STYLES


def distances_module():
    """The evaluate module's `ontology_distances.py`: taxonomy files, label matching, hop distances."""
    return project_module("ontology_distances")


@dataclass(frozen=True)
class TaxonomyNode:
    """One node: its id, name, description, children and parents (ids), and AudioSet's restrictions (else empty)."""

    id: str
    name: str
    description: str
    children: tuple[str, ...]
    parents: tuple[str, ...]
    restrictions: tuple[str, ...] = ()


class Taxonomy:
    """Nodes with several parents allowed, the classes (`label_ids`, in output order), a title and where it came from.

    Build one with `modeling_spa.taxonomy.read_taxonomy(path)` (JSON or CSV), `Taxonomy.from_entries`, or
    `Taxonomy.flat(names)` for a label list without hierarchy; `AudioSetOntology.load()` is the AudioSet ontology.
    """

    def __init__(
        self,
        nodes: dict[str, TaxonomyNode],
        label_ids: Sequence[str] | None = None,
        title: str = "taxonomy",
        source: str | None = None,
    ):
        self.nodes = nodes
        self._order = {node_id: i for i, node_id in enumerate(nodes)}
        self.title, self.source = title, source
        self.label_ids = list(label_ids) if label_ids is not None else self.leaves
        for node_id in self.label_ids:
            self._check_id(node_id)

    @classmethod
    def from_entries(cls, entries, title: str = "taxonomy", source: str | None = None, label_ids=None) -> Taxonomy:
        """From checked `TaxonomyEntry`s (`ontology_distances.read_taxonomy`)."""
        children = distances_module().taxonomy_children(entries)
        nodes = {
            e.id: TaxonomyNode(e.id, e.name, e.description, tuple(children[e.id]), tuple(e.parents)) for e in entries
        }
        return cls(nodes, label_ids, title, source)

    @classmethod
    def flat(
        cls,
        names: Sequence[str],
        title: str = "label list",
        descriptions: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> Taxonomy:
        """A flat label list: each name is a class (its id: `ids`, else the name), without parents. SPA's label texts
        work from the names (or `descriptions`); distances, OBCE and OmAP need a hierarchy and say so."""
        module = distances_module()
        texts = list(descriptions) if descriptions is not None else [""] * len(names)
        ids = list(ids) if ids is not None else list(names)
        entries = [module.TaxonomyEntry(str(i), str(n), (), d, f"label #{k}")
                   for k, (i, n, d) in enumerate(zip(ids, names, texts, strict=True))]  # fmt: skip
        module.check_taxonomy(entries, title)
        return cls.from_entries(entries, title)

    def with_labels(self, labels: Sequence[str]) -> Taxonomy:
        """The same taxonomy with `labels` (ids or names) as its classes, in that order."""
        # A shallow copy shares the nodes and the node distances; only the per-class cache (`distances`) is dropped.
        copy = object.__new__(type(self))
        copy.__dict__.update({k: v for k, v in self.__dict__.items() if k != "distances"})
        copy._set_labels(self.ids_of(labels))
        return copy

    def _set_labels(self, ids: list[str]) -> None:
        self.label_ids = ids

    def __repr__(self) -> str:
        kind = f"{len(self.top_level_ids)} top-level" if self.has_hierarchy else "flat"
        return f"Taxonomy({self.title!r}: {len(self.nodes)} nodes, {len(self.label_ids)} classes, {kind})"

    def record(self) -> dict:
        """What a model's config keeps of its taxonomy, for its card: title, source, size, whether it is a hierarchy."""
        return {"name": self.title, "source": self.source, "nodes": len(self.nodes), "hierarchy": self.has_hierarchy}

    # -- graph ---------------------------------------------------------------------------------------------------------
    @property
    def has_hierarchy(self) -> bool:
        """Whether any node has a parent; a flat label list has no distances."""
        return any(node.parents for node in self.nodes.values())

    @property
    def top_level_ids(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if not node.parents]

    @property
    def leaves(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if not node.children]

    @functools.cached_property
    def _depths(self) -> dict[str, int]:
        """Length of the shortest downward path from any top-level node (breadth-first from all of them)."""
        depth = {node_id: 0 for node_id in self.top_level_ids}
        queue = deque(depth)
        while queue:
            node_id = queue.popleft()
            for child in self.nodes[node_id].children:
                if child not in depth:
                    depth[child] = depth[node_id] + 1
                    queue.append(child)
        unreachable = set(self.nodes) - set(depth)
        if unreachable:
            raise ValueError(f"Nodes not reachable from any top-level node (a cycle?): {sorted(unreachable)[:5]}")
        return depth

    def path_to_top(self, node_id: str) -> list[str]:
        """The shortest upward path from `node_id` to a top-level node, top first.

        Tie-break, deterministic: at every step up, take the parent closest to the top; among equally close
        parents, the one listed first in the file (for AudioSet: "Growling" has four parents at equal depth (Dog,
        Cat, Roaring cats, Canidae) and goes through Dog, which comes first in `ontology.json`).
        """
        self._check_id(node_id)
        path = [node_id]
        while self.nodes[path[-1]].parents:
            parents = self.nodes[path[-1]].parents
            path.append(min(parents, key=lambda p: (self._depths[p], self._order[p])))
        return path[::-1]

    def depth(self, node_id: str) -> int:
        """The length of the shortest path down from a top-level node (top-level nodes: 0; AudioSet's "Dog": 2)."""
        self._check_id(node_id)
        return self._depths[node_id]

    def ancestors(self, node_id: str) -> set[str]:
        """Every node above `node_id` through any of its parents (AudioSet: 38 nodes have several), itself excluded."""
        self._check_id(node_id)
        found, stack = set(), list(self.nodes[node_id].parents)
        while stack:
            parent = stack.pop()
            if parent not in found:
                found.add(parent)
                stack.extend(self.nodes[parent].parents)
        return found

    def top_level(self, node_id: str) -> str:
        """The top-level node of `node_id` (the first node of `path_to_top`)."""
        return self.path_to_top(node_id)[0]

    @functools.cached_property
    def node_distances(self) -> np.ndarray:
        """All-pairs hop distances on the undirected graph over every node, in file order."""
        self.require_hierarchy("Graph distances")
        return distances_module().hop_distances({node_id: node.children for node_id, node in self.nodes.items()})

    def distances_for(self, ids: Sequence[str]) -> np.ndarray:
        """The sub-matrix of full-graph distances for `ids`, in the given order."""
        for node_id in ids:
            self._check_id(node_id)
        index = np.array([self._order[node_id] for node_id in ids], dtype=np.int64)
        return self.node_distances[np.ix_(index, index)]

    @functools.cached_property
    def distances(self) -> np.ndarray:
        """The C x C distance matrix of the classes, in their order: symmetric, zero diagonal."""
        matrix = self.distances_for(self.label_ids)
        matrix.setflags(write=False)
        return matrix

    def require_hierarchy(self, what: str) -> None:
        """Raise, saying plainly why, when this taxonomy is a flat label list."""
        if not self.has_hierarchy:
            raise ValueError(
                f"{what} need(s) a hierarchy, and {self.title!r} is a flat label list (no class has a parent): OBCE "
                "and OmAP weigh mistakes by graph distance between classes. Give the classes a taxonomy file with "
                "parents (docs/fine-tune.md), or train with --classification_loss bce and report mAP."
            )

    # -- labels --------------------------------------------------------------------------------------------------------
    def ids_of(self, labels: Sequence) -> list[str]:
        """Each label, a node's id or name, as its id; all unknown labels in one error with the closest names."""
        entries = [distances_module().TaxonomyEntry(n.id, n.name) for n in self.nodes.values()]
        return distances_module().class_ids(entries, labels, repr(self.title))

    # -- label text ----------------------------------------------------------------------------------------------------
    def name(self, node_id: str, name_style: str = "short") -> str:
        """The node's name (`name_style` matters for AudioSet's synonym lists only: `AudioSetOntology.name`)."""
        self._check_id(node_id)
        if name_style not in ("short", "full"):
            raise ValueError(f"Unknown name_style {name_style!r}; use 'short' or 'full'.")
        return self.nodes[node_id].name

    def description(
        self, node_id: str, style: str = "concat", prompt_template: str = DEFAULT_PROMPT, name_style: str = "short"
    ) -> str:
        """The language description of one class (SPA paper, section 3.1).

        - `direct`: the name, "Male speech"
        - `prompt`: `prompt_template` filled with the name, "the sound of Male speech"
        - `desc`: the node's description (its name where it has none)
        - `concat`: `path_to_top` names joined by " > ", "Human sounds > Human voice > Speech > Male speech"

        `check_distinct_descriptions` guards a class set against shared texts.
        """
        if style == "direct":
            return self.name(node_id, name_style)
        if style == "prompt":
            if "{label}" not in prompt_template:
                raise ValueError(f"prompt_template {prompt_template!r} must contain '{{label}}'.")
            return prompt_template.format(label=self.name(node_id, name_style))
        if style == "desc":
            self._check_id(node_id)
            return self.nodes[node_id].description.strip() or self.name(node_id, name_style)
        if style == "concat":
            return CONCAT_SEPARATOR.join(self.name(node, name_style) for node in self.path_to_top(node_id))
        raise ValueError(f"Unknown description style {style!r}; choose one of {DESCRIPTION_STYLES}.")

    def descriptions(
        self,
        style: str = "concat",
        ids: Sequence[str] | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        name_style: str = "short",
    ) -> list[str]:
        """Descriptions of `ids` (default: the classes, in order) in one style; see `description`."""
        return [
            self.description(node_id, style, prompt_template, name_style)
            for node_id in (self.label_ids if ids is None else ids)
        ]

    def _check_id(self, node_id: str) -> None:
        if node_id not in self.nodes:
            raise ValueError(f"Unknown id {node_id!r}: it is not a node of the taxonomy {self.title!r}.")


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
