"""OmAP, mAP and average precision in the package. Their one implementation is `metrics/omap/omap_core.py`, the core
of the self-contained evaluate module, imported here by its path (`modeling_spa.files.project_module`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..files import project_module

_core = project_module("omap_core")
average_precision = _core.average_precision
check_distances = _core.check_distances
level_scales = _core.level_scales
nearest_positive_distance = _core.nearest_positive_distance


def compute_omap(
    references: Any, predictions: Any, distances: Any | None = None, taxonomy: Any | None = None
) -> dict[str, Any]:
    """OmAP, OmAP per level and mAP of (clips, classes) labels and scores (see `metrics/omap/omap_core.py`).

    The class distances: `distances` (classes, classes) hop counts; or `taxonomy`, a `Taxonomy` (its classes in the
    order of the columns, e.g. `read_taxonomy(path, classes=[...])`), or a taxonomy file's path or {id: [children]}
    mapping (its leaves in file order); or neither: the 527 AudioSet labels (`AudioSetOntology.load().distances`).
    A flat label list has no distances: an error says OmAP needs a hierarchy.
    """
    if distances is not None and taxonomy is not None:
        raise ValueError("Give `distances` or `taxonomy`, not both.")
    if taxonomy is not None:
        from ..taxonomy import load_taxonomy

        taxonomy = load_taxonomy(taxonomy)
        taxonomy.require_hierarchy("OmAP")
        distances = taxonomy.distances
    elif distances is None:
        distances = default_distances(np.shape(references)[-1])
    return _core.compute_omap(references, predictions, distances)


def default_distances(num_classes: int) -> np.ndarray:
    """The AudioSet label distances, for `num_classes` = 527 (an error naming the way out otherwise)."""
    from ..taxonomy import AudioSetOntology

    ontology = AudioSetOntology.load()
    if num_classes != len(ontology.label_mids):
        raise ValueError(
            f"Got {num_classes} classes but the AudioSet label index has {len(ontology.label_mids)}; "
            "pass `distances` for your classes (e.g. AudioSetOntology.load().distances_for(mids))."
        )
    return ontology.distances


__all__ = [
    "average_precision",
    "check_distances",
    "compute_omap",
    "default_distances",
    "level_scales",
    "nearest_positive_distance",
]
