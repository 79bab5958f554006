"""Tagging: files and collections to scores, tables, embeddings and decisions with a trained model.

- `files`: one file, its windows streamed and scored in batches (`file_outputs`, `tag_file`); `scoring`: the batch
  forward and the aggregation every path shares.
- `sources`: what to tag: files, folders, list files (`collect_files`), `datasets` builds (`load_dataset_collection`).
- `pipeline`: a collection: decoding in worker processes, windows of many files batched together, one `TaggedFile`
  per file with its per-window outputs (`tag_collection`).
- `rows`, `tables`, `embeddings`: rows and the CSV / JSON lines / Parquet tables that a run started again continues.
- `runs`: a run into its outputs, with a progress bar, alone or under `accelerate launch` (`run_tagging`).
- Decisions on the scores: per-class thresholds (`thresholds`), ontology-consistent tags (`hierarchy`), events from a
  file's windows (`events`, `timeline`) or from a live stream (`stream`), and timelines evaluated on composed real
  recordings (`scenes`).
"""

from .events import Event, EventRules, EventTracker, detect_events, events_json, events_tsv
from .files import (
    embedding_cosines,
    file_outputs,
    file_scores,
    file_window_outputs,
    file_windows,
    tag_file,
    text_cosines,
)
from .hierarchy import LabelHierarchy, node_tags
from .pipeline import TaggedFile, tag_collection
from .sources import DatasetCollection, FileCollection, collect_files, load_dataset_collection
from .stream import EventStream
from .thresholds import calibrate_thresholds, f1_report, pipeline_tags, resolve_thresholds, store_thresholds
from .timeline import WindowScores, event_classes, events_from_windows, file_events, file_window_scores

__all__ = [
    "DatasetCollection",
    "Event",
    "EventRules",
    "EventStream",
    "EventTracker",
    "FileCollection",
    "LabelHierarchy",
    "TaggedFile",
    "WindowScores",
    "calibrate_thresholds",
    "collect_files",
    "detect_events",
    "embedding_cosines",
    "event_classes",
    "events_from_windows",
    "events_json",
    "events_tsv",
    "f1_report",
    "file_events",
    "file_outputs",
    "file_scores",
    "file_window_outputs",
    "file_window_scores",
    "file_windows",
    "load_dataset_collection",
    "node_tags",
    "pipeline_tags",
    "resolve_thresholds",
    "store_thresholds",
    "tag_collection",
    "tag_file",
    "text_cosines",
]
