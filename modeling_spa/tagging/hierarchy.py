"""Ontology-consistent tags: the model's classes placed in the AudioSet ontology, each ancestor scored by its best
descendant, and coarse tags at a chosen depth.

A flat tagger can say "Dog 0.9" and "Domestic animals, pets 0.2" for one clip, or give "Bark" without "Animal". Here a
node of the ontology scores the highest score among the model's classes at or below it (through every parent: 38
AudioSet nodes have several), so a parent is never less likely than its child, and nodes the model has no class for
("Sounds of things", "Vehicle" for a model without it) get scores too. Where a fine class is uncertain between
siblings ("Dog" 0.45, "Cat" 0.40), their parent carries the better of the two; a coarse tag is right whenever any of
its classes is.

Levels are the depth of a node: its shortest distance down from a top-level node (`AudioSetOntology.depth`). Level 0
is the seven top-level categories ("Animal", "Music", "Sounds of things", ...), level 1 their children ("Domestic
animals, pets", "Vehicle", "Musical instrument", ...). A class of the model above the level asked for ("Music",
itself top-level, at level 1) stands for itself at that level, so no prediction vanishes from a coarse view.

Thresholds carry over the same way: a node's threshold is the lowest of its classes' thresholds, so the node is on
whenever one of its classes is.

The checkpoint holds its classes' mids (`config.label_mids`) but not the ontology, so this needs the ontology files
(`AudioSetOntology.load()`: $SPA_ONTOLOGY / the cache / a verified download).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..taxonomy import AudioSetOntology


class LabelHierarchy:
    """The model's classes (`label_mids`, in output order) and every ontology node above them.

    Nodes are ordered by depth, then as in `ontology.json`; `node_mids`, `node_names` and `node_depths` describe them.
    """

    def __init__(self, label_mids: Sequence[str], ontology: AudioSetOntology | None = None):
        self.ontology = ontology or AudioSetOntology.load()
        self.label_mids = list(label_mids)
        order = {mid: i for i, mid in enumerate(self.ontology.nodes)}
        above = {mid: self.ontology.ancestors(mid) | {mid} for mid in self.label_mids}  # raises on an unknown mid
        nodes = set().union(*above.values()) if above else set()
        self.node_mids = sorted(nodes, key=lambda mid: (self.ontology.depth(mid), order[mid]))
        self.node_names = [self.ontology.name(mid) for mid in self.node_mids]
        self.node_depths = np.array([self.ontology.depth(mid) for mid in self.node_mids])
        column = {mid: n for n, mid in enumerate(self.node_mids)}
        # members[n]: the classes at or below node n, whose best score is the node's.
        members = [[] for _ in self.node_mids]
        for c, mid in enumerate(self.label_mids):
            for node in above[mid]:
                members[column[node]].append(c)
        self.members = [np.array(m, dtype=np.int64) for m in members]
        self._class_nodes = np.array([column[mid] for mid in self.label_mids], dtype=np.int64)

    @classmethod
    def for_model(cls, config, ontology: AudioSetOntology | None = None) -> LabelHierarchy:
        """The hierarchy of a model's classes; an error when the config does not say which AudioSet classes they are
        (a re-headed model without `label_mids`)."""
        if not config.label_mids:
            raise ValueError(
                "The model's classes carry no AudioSet mids (config.label_mids is None, e.g. a re-headed model): "
                "ancestors and coarse levels need them"
            )
        return cls(config.label_mids, ontology)

    def __repr__(self) -> str:
        return f"LabelHierarchy({len(self.label_mids)} classes, {len(self.node_mids)} nodes, levels 0-{self.max_level})"

    @property
    def max_level(self) -> int:
        return int(self.node_depths.max()) if len(self.node_depths) else 0

    def node_scores(self, scores: np.ndarray) -> np.ndarray:
        """(..., classes) scores -> (..., nodes): each node's best score among its classes."""
        scores = np.asarray(scores)
        if scores.shape[-1] != len(self.label_mids):
            raise ValueError(f"scores have {scores.shape[-1]} classes, the hierarchy {len(self.label_mids)}")
        return np.stack([scores[..., m].max(axis=-1) for m in self.members], axis=-1)

    def node_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """(classes,) thresholds -> (nodes,): each node's lowest among its classes (on when one of them is)."""
        thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(self.label_mids),))
        return np.array([thresholds[m].min() for m in self.members])

    def level_nodes(self, level: int) -> np.ndarray:
        """Indices (into the nodes) of the tags at `level`: the nodes of that depth, and the classes above it."""
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level must be between 0 (top-level categories) and {self.max_level} for these classes, "
                             f"got {level}")  # fmt: skip
        shallow = self._class_nodes[self.node_depths[self._class_nodes] < level]
        return np.union1d(np.flatnonzero(self.node_depths == level), shallow)

    def ancestors_of(self, classes: Sequence[int]) -> np.ndarray:
        """Indices of the nodes strictly above the given classes (by class index), shallowest first."""
        wanted = {self._class_nodes[c] for c in classes}
        return np.array([n for n, m in enumerate(self.members) if n not in wanted and np.isin(m, classes).any()],
                        dtype=np.int64)  # fmt: skip


def node_tags(hierarchy: LabelHierarchy, scores: np.ndarray, nodes: np.ndarray, thresholds=None) -> list[dict]:
    """One clip's tags for the given nodes, best first: mid, label, depth and score (and threshold, and only those
    reaching it, when `thresholds` (classes,) are given)."""
    values = hierarchy.node_scores(scores)
    limits = hierarchy.node_thresholds(thresholds) if thresholds is not None else None
    tags = []
    for n in nodes:
        if limits is not None and values[n] < limits[n]:
            continue
        tag = {"label": hierarchy.node_names[n], "mid": hierarchy.node_mids[n], "depth": int(hierarchy.node_depths[n]),
               "score": float(values[n])}  # fmt: skip
        if limits is not None:
            tag["threshold"] = float(limits[n])
        tags.append(tag)
    return sorted(tags, key=lambda t: (-t["score"], t["depth"], t["label"]))


__all__ = ["LabelHierarchy", "node_tags"]
