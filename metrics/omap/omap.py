"""OmAP: ontology-aware mean average precision for AudioSet-style multi-label tagging, as an `evaluate` metric.

Self-contained: it needs `evaluate`, `datasets` and numpy, and its core `omap_core.py` beside it (evaluate copies
relative imports along). Only the default AudioSet distances (`distances=None`) need the `spa-audio-tagging` package.
"""

import datasets
import evaluate
import numpy as np

from .omap_core import compute_omap

_DESCRIPTION = """\
Ontology-aware mAP (OmAP, Liu et al., INTERSPEECH 2023) weights every false positive by how far, in the
AudioSet ontology graph, the wrongly predicted class is from the clip's nearest true label. At level
lambda = 0..Dmax, confusions within lambda hops cost nothing and farther ones cost their distance (normalised
by the mean distance above lambda). OmAP is the mean over all Dmax + 1 levels (22 for the 527 AudioSet
labels). Plain mAP (scikit-learn's average precision, macro-averaged) is returned alongside.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): (clips, classes) scores; only their ranking matters.
    references (`list` of `list` of `int`): (clips, classes) binary labels.
    distances (`list` of `list` of `int`, optional): (classes, classes) ontology hop distances. Default: the
        527 AudioSet labels in the order of `class_labels_indices.csv` (needs the `spa-audio-tagging` package and
        the ontology files it finds; see its README).
Returns:
    map (`float`), omap (`float`), omap_per_lambda (`list` of Dmax+1 `float`), ap_per_class (`list`, NaN for
    classes without positives), omap_ap_per_class (`list` of lists, levels x classes), n_classes_evaluated,
    n_classes_without_positives, n_clips_without_positives (`int`).
Examples:
    >>> omap = evaluate.load("spa-audio-tagging/omap")
    >>> distances = [[0, 1, 3], [1, 0, 2], [3, 2, 0]]
    >>> result = omap.compute(
    ...     predictions=[[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.1, 0.3, 0.9], [0.8, 0.1, 0.2]],
    ...     references=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]],
    ...     distances=distances,
    ... )
    >>> round(result["map"], 4), round(result["omap"], 4)
    (0.8333, 0.9722)
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

    def _compute(self, predictions, references, distances=None):
        result = compute_omap(np.asarray(references), np.asarray(predictions), distances)
        return {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in result.items()}
