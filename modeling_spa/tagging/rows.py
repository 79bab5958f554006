"""A tagged file as a table row, and the columns of a table (`TableLayout`).

Every format holds the same columns and values (`tables`): `file` (the key: a path, or a dataset row's id),
`duration_s`, `sample_rate` and `channels` of the file as stored, `windows` (how many the model scored), `error`
(empty when the file was tagged), then the `top_k` best classes, best first, as `label_i`, `score_i` (and with
`label_info` their `mid_i` and ontology `path_i`), and with `all_scores` one column `score:<label>` per class in the
model's order. Scores are the float32 sigmoid scores, written so that they read back exactly. With free label
texts (zero-shot) the ranked columns are `text_i`, `cosine_i` and every text's `cosine:<text>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .pipeline import TaggedFile

# Column types: the Parquet type of each; CSV and JSON lines hold the same values as text and JSON numbers.
FILE_COLUMNS = (("file", "string"), ("duration_s", "float64"), ("sample_rate", "int64"), ("channels", "int64"),
                ("windows", "int64"), ("error", "string"))  # fmt: skip


@dataclass(frozen=True)
class TableLayout:
    """What a row holds: `names` (the model's labels, or free texts with `texts=True`), the `top_k` best, every
    class's score (`all_scores`), and the labels' `mids` and ontology `paths` (`label_info`)."""

    names: Sequence[str]
    top_k: int = 5
    all_scores: bool = False
    mids: Sequence[str] | None = None
    paths: Sequence[str] | None = None
    texts: bool = False

    @property
    def label_info(self) -> bool:
        return self.mids is not None

    def columns(self) -> list[tuple[str, str]]:
        item, value = ("text", "cosine") if self.texts else ("label", "score")
        columns = list(FILE_COLUMNS)
        for rank in range(1, min(self.top_k, len(self.names)) + 1):
            columns += [(f"{item}_{rank}", "string"), (f"{value}_{rank}", "float32")]
            if self.label_info:
                columns += [(f"mid_{rank}", "string"), (f"path_{rank}", "string")]
        if self.all_scores:
            columns += [(f"{value}:{name}", "float32") for name in self.names]
        return columns

    def row(self, result: TaggedFile, values: np.ndarray | None = None) -> dict:
        """The row of `result`; `values` are the scores to rank (default: `result.scores`; cosines for texts)."""
        values = result.scores if values is None else values
        row = dict.fromkeys(name for name, _ in self.columns())
        windows = None if result.window_starts is None else len(result.window_starts)
        row.update(file=result.key, duration_s=result.duration_s, sample_rate=result.file_sampling_rate,
                   channels=result.channels, windows=windows, error=result.error)  # fmt: skip
        if result.error is not None:
            return row
        item, value = ("text", "cosine") if self.texts else ("label", "score")
        order = np.argsort(-values, kind="stable")[: self.top_k]
        for rank, index in enumerate(order, start=1):
            row[f"{item}_{rank}"], row[f"{value}_{rank}"] = self.names[index], float(values[index])
            if self.label_info:
                row[f"mid_{rank}"], row[f"path_{rank}"] = self.mids[index], self.paths[index]
        if self.all_scores:
            row.update({f"{value}:{name}": float(v) for name, v in zip(self.names, values, strict=True)})
        return row


def model_layout(config, top_k: int = 5, all_scores: bool = False, label_info: bool = False) -> TableLayout:
    """The layout of a model's classes (`config.id2label` order); mids and paths come from its config (empty
    strings where the checkpoint has none)."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    mids = paths = None
    if label_info:
        mids = list(config.label_mids or [""] * len(names))
        paths = list(config.label_paths or [""] * len(names))
    return TableLayout(names, top_k, all_scores, mids, paths)


__all__ = ["FILE_COLUMNS", "TableLayout", "model_layout"]
