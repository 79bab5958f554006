"""Tagging: files to scores with a trained model (`files`), decisions on them: per-class thresholds (`thresholds`),
ontology-consistent tags (`hierarchy`), events from a file's windows (`events`, `timeline`) or from a live stream
(`stream`), and timelines evaluated on composed real recordings (`scenes`)."""

from .events import Event, EventRules, EventTracker, detect_events, events_json, events_tsv
from .files import file_outputs, file_scores, file_windows, tag_file, text_cosines
from .hierarchy import LabelHierarchy, node_tags
from .stream import EventStream
from .thresholds import calibrate_thresholds, f1_report, pipeline_tags, resolve_thresholds, store_thresholds
from .timeline import WindowScores, event_classes, events_from_windows, file_events, file_window_scores

__all__ = [
    "Event",
    "EventRules",
    "EventStream",
    "EventTracker",
    "LabelHierarchy",
    "WindowScores",
    "calibrate_thresholds",
    "detect_events",
    "event_classes",
    "events_from_windows",
    "events_json",
    "events_tsv",
    "f1_report",
    "file_events",
    "file_outputs",
    "file_scores",
    "file_window_scores",
    "file_windows",
    "node_tags",
    "pipeline_tags",
    "resolve_thresholds",
    "store_thresholds",
    "tag_file",
    "text_cosines",
]
