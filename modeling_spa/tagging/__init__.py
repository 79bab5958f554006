"""Tagging: files and collections to scores, tables and embeddings with a trained model.

- `files`: one file, its windows streamed and scored in batches (`file_outputs`, `tag_file`).
- `sources`: what to tag: files, folders, list files (`collect_files`), `datasets` builds (`load_dataset_collection`).
- `pipeline`: a collection at the model's speed: decoding in worker processes, windows of many files batched together,
  one `TaggedFile` per file with its per-window outputs (`tag_collection`).
- `rows`, `tables`, `embeddings`: rows and the CSV / JSON lines / Parquet tables that a run started again continues.
- `runs`: a run into its outputs, with a progress bar, alone or under `accelerate launch` (`run_tagging`).
"""

from .files import (
    embedding_cosines,
    file_outputs,
    file_scores,
    file_window_outputs,
    file_windows,
    tag_file,
    text_cosines,
)
from .pipeline import TaggedFile, tag_collection
from .sources import DatasetCollection, FileCollection, collect_files, load_dataset_collection

__all__ = [
    "DatasetCollection",
    "FileCollection",
    "TaggedFile",
    "collect_files",
    "embedding_cosines",
    "file_outputs",
    "file_scores",
    "file_window_outputs",
    "file_windows",
    "load_dataset_collection",
    "tag_collection",
    "tag_file",
    "text_cosines",
]
