"""OmAP: ontology-aware mean average precision for AudioSet-style multi-label tagging, as an `evaluate` metric.

Self-contained: it needs `evaluate`, `datasets` and numpy, and the two files beside it, `omap_core.py` (the metric)
and `ontology_distances.py` (taxonomy files and label distances), which evaluate copies along with it. Any hierarchy
works: pass `distances`, or `taxonomy` (a taxonomy file or a {id: [children]} mapping, with the classes of the columns).
With neither, 527 columns are scored on the AudioSet ontology: its two files are found as the `spa-audio-tagging`
library finds them ($SPA_ONTOLOGY / $SPA_CLASS_LABELS, then the cache) or fetched once through evaluate's download
manager from their pinned location, checked against their sha256.
"""

import hashlib
import os

import datasets
import evaluate
import numpy as np

from .omap_core import compute_omap
from .ontology_distances import AUDIOSET_FILES, audioset_distances, local_file, taxonomy_distances

_DESCRIPTION = """\
Ontology-aware mAP (OmAP, Liu et al., INTERSPEECH 2023) weights every false positive by how far, in a taxonomy
graph (the AudioSet ontology, or any hierarchy), the wrongly predicted class is from the clip's nearest true label.
At level lambda = 0..Dmax, confusions within lambda hops cost nothing and farther ones cost their distance (normalised
by the mean distance above lambda). OmAP is the mean over all Dmax + 1 levels (22 for the 527 AudioSet
labels). Plain mAP (scikit-learn's average precision, macro-averaged) is returned alongside.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): (clips, classes) scores; only their ranking matters.
    references (`list` of `list` of `int`): (clips, classes) binary labels.
    distances (`list` of `list` of `int`, optional): (classes, classes) ontology hop distances. Default: the
        527 AudioSet labels in the order of `class_labels_indices.csv`, computed from the ontology files (found
        through $SPA_ONTOLOGY / $SPA_CLASS_LABELS or the cache, else downloaded when the module is loaded).
    taxonomy (`str` or `dict`, optional): instead of `distances`, any hierarchy: the path of a taxonomy file (JSON or
        CSV: id, name, parents, optional description; several parents allowed) or a {id: [children ids]} mapping.
        Distances are hop counts on its undirected parent-child graph.
    classes (`list` of `str`, optional): with `taxonomy`, the ids (or names) of the classes in column order;
        default: the taxonomy's leaves, in file order.
Returns:
    map (`float`), omap (`float`), omap_per_lambda (`list` of Dmax+1 `float`), ap_per_class (`list`, NaN for
    classes without positives), omap_ap_per_class (`list` of lists, levels x classes), n_classes_evaluated,
    n_classes_without_positives, n_clips_without_positives (`int`).
Examples:
    >>> omap = evaluate.load("omap")  # after `spa-install-metric`; or "spa-audio-tagging/omap", "metrics/omap"
    >>> distances = [[0, 1, 3], [1, 0, 2], [3, 2, 0]]
    >>> result = omap.compute(
    ...     predictions=[[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.1, 0.3, 0.9], [0.8, 0.1, 0.2]],
    ...     references=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]],
    ...     distances=distances,
    ... )
    >>> round(result["map"], 4), round(result["omap"], 4)
    (0.8333, 0.9722)
    >>> taxonomy = {"all": ["animal", "engine"], "animal": ["dog", "cat"], "dog": [], "cat": [], "engine": []}
    >>> result = omap.compute(
    ...     predictions=[[0.9, 0.8, 0.1], [0.7, 0.6, 0.55], [0.3, 0.4, 0.5]],
    ...     references=[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    ...     taxonomy=taxonomy,  # or "my_taxonomy.csv"
    ...     classes=["dog", "cat", "engine"],  # ids or names, in column order (default: the leaves)
    ... )
    >>> round(result["map"], 4), round(result["omap"], 4)
    (0.6667, 0.7903)
"""

_CITATION = """\
@inproceedings{liu2023ontology,
  title={Ontology-aware Learning and Evaluation for Audio Tagging},
  author={Liu, Haohe and Kong, Qiuqiang and Liu, Xubo and Mei, Xinhao and Wang, Wenwu and Plumbley, Mark D.},
  booktitle={Proc. INTERSPEECH},
  year={2023}
}
@inproceedings{liu2024semantic,
  title={Semantic Proximity Alignment: Towards Human Perception-Consistent Audio Tagging
         by Aligning with Label Text Description},
  author={Liu, Wuyang and Ren, Yanzhen},
  booktitle={Proc. ICASSP},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class OmAP(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # float64 so that scores keep their exact ties.
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2211.12195", "https://doi.org/10.1109/ICASSP48485.2024.10447498"],
        )

    def _download_and_prepare(self, dl_manager):
        """Find the AudioSet files, or fetch them (pinned, sha256-checked); a failure is kept and reported by the
        first `compute` that needs the AudioSet distances, not here: explicit `distances` need no file."""
        self._audioset_paths, self._audioset_error = None, None
        try:
            self._audioset_paths = [_local_or_download(spec, dl_manager) for spec in AUDIOSET_FILES]
        except Exception as err:  # noqa: BLE001 - offline, no network, a bad download: reported when needed
            self._audioset_error = err

    def _audioset_distances(self, num_classes: int) -> np.ndarray:
        paths, error = getattr(self, "_audioset_paths", None), getattr(self, "_audioset_error", None)
        if paths is None:
            hint = f" ({error})" if error else ""
            raise ValueError(
                f"Without `distances`, OmAP scores the 527 AudioSet labels, and their ontology files could not be "
                f"found or fetched{hint}. Set $SPA_ONTOLOGY and $SPA_CLASS_LABELS to the two files, or pass "
                "`distances`."
            )
        distances = audioset_distances(*paths)
        if num_classes != len(distances):
            raise ValueError(
                f"Got {num_classes} classes; without `distances` OmAP scores the {len(distances)} AudioSet labels in "
                "class_labels_indices.csv order. Pass `distances` for other classes."
            )
        return distances

    def _compute(self, predictions, references, distances=None, taxonomy=None, classes=None):
        references, predictions = np.asarray(references), np.asarray(predictions)
        if taxonomy is not None:
            if distances is not None:
                raise ValueError("Give `distances` or `taxonomy`, not both.")
            distances = _taxonomy_distances(taxonomy, classes, references.shape[1] if references.ndim == 2 else 0)
        elif classes is not None:
            raise ValueError("`classes` names the columns of a `taxonomy`: pass the taxonomy too.")
        elif distances is None:
            distances = self._audioset_distances(references.shape[1] if references.ndim == 2 else 0)
        result = compute_omap(references, predictions, distances)
        return {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in result.items()}


def _taxonomy_distances(taxonomy, classes, num_classes: int) -> np.ndarray:
    """The distances of a taxonomy's classes (`classes`, else its leaves), which must be as many as the columns."""
    ids, distances = taxonomy_distances(taxonomy, classes)
    if len(ids) != num_classes:
        which = "`classes` names" if classes is not None else "the taxonomy's leaves (its classes by default) are"
        raise ValueError(f"Got {num_classes} classes (columns) but {which} {len(ids)}: {ids[:10]}. Pass `classes`, "
                         "the ids or names of the columns in order.")  # fmt: skip
    return distances


def _local_or_download(spec, dl_manager) -> str:
    """The file of `spec` as the library finds it, else downloaded by evaluate's manager and checked."""
    found = local_file(spec)
    if found is not None:
        return str(found)
    path = dl_manager.download(spec.url)
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    if digest != spec.sha256:
        os.remove(path)
        raise ValueError(f"{spec.url} has sha256 {digest}, expected {spec.sha256}: refused.")
    return path
