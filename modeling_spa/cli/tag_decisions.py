"""spa-tag's decisions on top of the scores: per-class thresholds, ontology ancestors and coarse levels, and events.

Kept apart from the rest of `spa-tag` (which reads the files and prints scores): `add_decision_arguments` adds the
options to a parser, `Decisions.from_args` checks them against the model once, and for each file
`Decisions.file_outputs` turns its clip scores (and, for events, the file itself) into a dict that
`Decisions.show` prints. The work is done by `modeling_spa.tagging` (thresholds, hierarchy, timeline, events).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..tagging.events import Event, EventRules, events_json, events_tsv
from ..tagging.hierarchy import LabelHierarchy, node_tags
from ..tagging.thresholds import resolve_thresholds
from ..tagging.timeline import event_classes, events_from_windows, file_window_scores


def add_decision_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decisions: thresholds, ontology levels, events")
    group.add_argument(
        "--threshold",
        metavar="auto|NUMBER",
        help="list the classes at or above their threshold instead of the top k: 'auto' is the checkpoint's "
        "calibrated per-class thresholds (config.thresholds), a number the same for every class",
    )
    group.add_argument(
        "--ancestors",
        action="store_true",
        help="add the ontology ancestors of the listed classes, each scored by its best class below it",
    )
    group.add_argument(
        "--level",
        type=int,
        metavar="DEPTH",
        help="coarse tags (and events) at this ontology depth: 0 = top-level categories (Animal, Music, ...), "
        "1 = their children (Vehicle, ...)",
    )
    group.add_argument("--events", action="store_true", help="the file's events: label, onset, offset, score")
    group.add_argument("--events-dir", metavar="DIR", help="with --events: write DIR/<file name>.events.tsv "
                       "(an Audacity label track) and .events.json for each file")  # fmt: skip
    group.add_argument(
        "--event-hop",
        type=float,
        metavar="SECONDS",
        help="hop between the windows of events (default: --window-hop, else the model's); shorter places onsets "
        "and offsets more finely",
    )
    group.add_argument("--hysteresis", type=float, default=1.0, metavar="RATIO", help="an event ends when its score "
                       "drops below RATIO x its threshold (default 1: a single threshold)")  # fmt: skip
    group.add_argument("--median", type=int, default=1, metavar="WINDOWS", help="median filter over this many "
                       "windows (odd; default 1: none)")  # fmt: skip
    group.add_argument("--min-duration", type=float, default=0.0, metavar="SECONDS", help="drop shorter events")
    group.add_argument("--min-gap", type=float, default=0.0, metavar="SECONDS",
                       help="merge events of one class separated by less")  # fmt: skip


class Decisions:
    """The decision options of one run, checked against the model (`from_args`)."""

    def __init__(self, args: argparse.Namespace, model):
        self.args, self.config = args, model.config
        # Events need a threshold: the checkpoint's where it has them, else the usual 0.5 (said in the output).
        auto = getattr(self.config, "thresholds", None) is not None
        self.threshold = args.threshold or ("auto" if auto else "0.5")
        self.thresholds = resolve_thresholds(self.config, self.threshold)
        needs_ontology = args.ancestors or args.level is not None
        self.hierarchy = LabelHierarchy.for_model(self.config) if needs_ontology else None
        if args.level is not None:
            self.hierarchy.level_nodes(args.level)  # a level out of range fails now
        self.rules = EventRules(args.median, args.hysteresis, args.min_duration, args.min_gap)
        self.hop_s = args.event_hop if args.event_hop is not None else args.window_hop
        self._written: dict[str, str] = {}

    @classmethod
    def from_args(cls, args: argparse.Namespace, model, parser: argparse.ArgumentParser) -> Decisions | None:
        """None when no decision option was given (spa-tag then prints its top k as before); a parser error naming
        the problem when an option does not fit the model."""
        given = args.threshold is not None or args.ancestors or args.level is not None or args.events
        if args.events_dir and not args.events:
            parser.error("--events-dir needs --events")
        if not given:
            return None
        try:
            return cls(args, model)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))

    def file_outputs(self, path: str, scores: np.ndarray, model, extractor) -> dict:
        """One file's decisions from its clip scores (num_labels,); its events read the file again, window by window."""
        top_k = self.args.top_k
        if self.args.threshold is not None:
            order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= self.thresholds[i]]
            order = order[:top_k] if top_k else order
        else:
            order = list(np.argsort(-scores, kind="stable")[: top_k or 5])
        outputs = {"file": path, "labels": [self._label(i, scores) for i in order]}
        if self.args.ancestors:
            outputs["ancestors"] = node_tags(self.hierarchy, scores, self.hierarchy.ancestors_of(order))
        if self.args.level is not None:
            limits = self.thresholds if self.args.threshold is not None else None
            coarse = node_tags(self.hierarchy, scores, self.hierarchy.level_nodes(self.args.level), limits)
            outputs[f"level_{self.args.level}"] = coarse if limits is not None else coarse[: top_k or 5]
        if self.args.events:
            classes = event_classes(self.config, self.thresholds, self.args.level, self.hierarchy.ontology
                                    if self.hierarchy else None)  # fmt: skip
            windows = file_window_scores(path, model, extractor, self.hop_s)
            events = events_from_windows(windows, classes, self.rules)
            outputs["events"] = [event.to_dict() for event in events]
            if self.args.events_dir:
                self._write_events(path, events)
        return outputs

    def _label(self, index: int, scores: np.ndarray) -> dict:
        config, blank = self.config, [""] * self.config.num_labels
        item = {"label": config.id2label[int(index)], "mid": (config.label_mids or blank)[index],
                "score": float(scores[index]), "path": (config.label_paths or blank)[index]}  # fmt: skip
        if self.args.threshold is not None:
            item["threshold"] = float(self.thresholds[index])
        return item

    def _write_events(self, path: str, events: list[Event]) -> None:
        name = Path(path).name
        if self._written.setdefault(name, path) != path:
            raise ValueError(f"{path} and {self._written[name]} would both write {name}.events.* in --events-dir")
        folder = Path(self.args.events_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.events.tsv").write_text(events_tsv(events), encoding="utf-8")
        settings = {"threshold": self.threshold, "hop_s": self.hop_s, "level": self.args.level,
                    "rules": self.rules.__dict__}  # fmt: skip
        (folder / f"{name}.events.json").write_text(events_json(events, file=path, settings=settings) + "\n")

    def show(self, outputs: dict, as_json: bool) -> None:
        """Print one file's decisions: one JSON object, or lines."""
        if as_json:
            print(json.dumps(outputs))
            return
        print(outputs["file"])
        if self.args.threshold is not None:
            print(f"  classes at or above their threshold ({self.threshold}):" if outputs["labels"] else
                  f"  no class reaches its threshold ({self.threshold})")  # fmt: skip
        for item in outputs["labels"]:
            print(f"  {item['score']:.3f}  {item['label']:<40s} {item['path']}")
        if "ancestors" in outputs:
            print("  ancestors (score of the best class below):")
            for item in outputs["ancestors"]:
                print(f"  {item['score']:.3f}  {item['label']}")
        level = f"level_{self.args.level}"
        if level in outputs:
            print(f"  ontology level {self.args.level}:")
            for item in outputs[level]:
                print(f"  {item['score']:.3f}  {item['label']}")
        if "events" in outputs:
            print(f"  events (threshold {self.threshold}):" if outputs["events"] else "  no events")
            for e in outputs["events"]:
                print(f"  {e['onset']:8.2f} - {e['offset']:8.2f} s  {e['score']:.3f}  {e['label']}")
