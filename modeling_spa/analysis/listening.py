"""The statistics of the human-consistency study (the SPA paper's Table 3, `recipes/listening_study.py`).

Selection (`selection`):
- Per-class precision is precision at N: for class c and a model, the fraction of dataset positives among the N
  clips the model scores highest for c (N = clips per class, the clips a rater hears per class; ties in score go to
  the earlier clip of the split). It needs no threshold, so an uncalibrated model has one too, and it is measured on
  exactly the kind of clips the raters hear.
- Classes: those with at least one positive clip in the split, ranked by |precision_a - precision_b| (largest first;
  ties by class order); the first K are studied.
- Clips of a class: the union of both models' top N for it (the clips the two models disagree about, and those they
  both rank first); N of them drawn without replacement by a generator seeded with (seed, class index), so a class's
  clips do not depend on which other classes were chosen. A split with fewer clips gives fewer.

Scoring (`read_raters`, `combine`, `consistency`): an item's human label is the majority of the raters' yes/no
answers; a tie (as many yes as no) has no label and is left out (`ties="confidence"`: the side whose answers carry the
larger total confidence wins, an equal total is still left out). Agreement (the share of raters on the majority side)
and the mean confidence are reported per item and class. The consistency score of a model for a class is the average
precision of its scores against the human labels over that class's labelled items (the library's AP,
`modeling_spa.metrics.average_precision`: scikit-learn's step-wise formula); a class whose labelled items hold no
human positive has no AP and is left out of the mean (named). The dataset-label row scores the dataset's 0/1 labels
the same way. An answer file that is malformed, from another study, names unknown items, holds invalid values (an
answer that is not an object included) or repeats a rater id is an error (`skip_invalid`: excluded and counted); a
file that leaves items unanswered is an error too (`allow_incomplete`: its answers count, the rest are counted as
missing).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import average_precision

STUDY_FORMAT = "spa-listening-study"


ANSWERS_FORMAT = "spa-listening-answers"


FORMAT_VERSION = 1


TIES = ("exclude", "confidence")


PRECISION_DEFINITION = (
    "precision at N: the fraction of dataset positives among the N clips a model scores highest for the class "
    "(N = clips per class; equal scores: the earlier clip of the split first)"
)


class StudyError(ValueError):
    """A problem with the inputs of a subcommand, told to the user as it is."""


@dataclass
class SplitScores:
    """One model's scores on a split: (clips, classes) scores and dataset labels, clip ids, class mids and names."""

    name: str
    scores: np.ndarray
    labels: np.ndarray
    clip_ids: list[str]
    mids: list[str]
    names: list[str]
    source: str = ""


def read_scores(folder: str | Path, name: str | None = None) -> SplitScores:
    """The files `recipes/evaluate.py --save_scores` writes in `folder`."""
    folder = Path(folder)
    missing = [f for f in ("scores.npy", "labels.npy", "clip_ids.json", "per_class.csv") if not (folder / f).is_file()]
    if missing:
        raise StudyError(f"{folder} is no score folder of recipes/evaluate.py --save_scores: no {', '.join(missing)}")
    with open(folder / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scores = np.load(folder / "scores.npy").astype(np.float64)
    labels = np.load(folder / "labels.npy").astype(np.int64)
    clip_ids = [str(clip) for clip in json.loads((folder / "clip_ids.json").read_text())]
    if scores.shape != labels.shape or scores.shape != (len(clip_ids), len(rows)):
        raise StudyError(
            f"{folder}: scores {scores.shape}, labels {labels.shape}, {len(clip_ids)} clip ids and {len(rows)} classes "
            "do not fit together"
        )
    if not np.isfinite(scores).all():
        raise StudyError(f"{folder}: scores.npy holds NaN or inf")
    if len(set(clip_ids)) != len(clip_ids):
        raise StudyError(f"{folder}: clip_ids.json repeats clip ids")
    mids, names = [row["mid"] for row in rows], [row["name"] for row in rows]
    return SplitScores(name or folder.name, scores, labels, clip_ids, mids, names, str(folder))


def align(a: SplitScores, b: SplitScores) -> SplitScores:
    """`b` with its clips and classes in `a`'s order; the two must cover the same clips, classes and labels."""
    if set(a.clip_ids) != set(b.clip_ids):
        only = sorted(set(a.clip_ids) ^ set(b.clip_ids))
        raise StudyError(f"The score files cover different clips ({len(only)} in one only, e.g. {only[:3]})")
    if set(a.mids) != set(b.mids) or len(a.mids) != len(b.mids):
        raise StudyError(f"The score files have different classes ({len(a.mids)} and {len(b.mids)} mids)")
    rows = [b.clip_ids.index(clip) for clip in a.clip_ids] if a.clip_ids != b.clip_ids else list(range(len(a.clip_ids)))
    cols = [b.mids.index(mid) for mid in a.mids]
    scores, labels = b.scores[rows][:, cols], b.labels[rows][:, cols]
    if not np.array_equal(labels, a.labels):
        raise StudyError("The score files hold different dataset labels for the same clips: not the same split")
    return SplitScores(b.name, scores, labels, list(a.clip_ids), list(a.mids), list(a.names), b.source)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` highest of `scores` (one class's column), highest first; equal scores: lower index first."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:n]


def precision_at_n(scores: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Per class (column): the fraction of positives among the `n` clips scored highest (see the module docstring).

    With fewer than `n` clips, all clips count.
    """
    n = min(n, scores.shape[0])
    return np.array([labels[top_n(scores[:, c], n), c].mean() for c in range(scores.shape[1])])


def choose_classes(precision_a: np.ndarray, precision_b: np.ndarray, positives: np.ndarray, k: int) -> list[int]:
    """The `k` classes with a dataset positive and the largest |precision_a - precision_b|; ties by class order."""
    candidates = np.flatnonzero(positives > 0)
    difference = np.abs(precision_a - precision_b)[candidates]
    order = np.lexsort((candidates, -difference))
    return [int(c) for c in candidates[order][:k]]


def choose_clips(scores_a: np.ndarray, scores_b: np.ndarray, n: int, seed: int, class_index: int) -> list[int]:
    """`n` clips of one class: drawn from the union of both models' top `n`, seeded by (seed, class index)."""
    pool = np.union1d(top_n(scores_a, n), top_n(scores_b, n))
    if len(pool) > n:
        pool = np.random.default_rng([seed, class_index]).choice(pool, size=n, replace=False)
    return sorted(int(i) for i in pool)


def study_id_of(items: list[dict], seed: int) -> str:
    """A short id from the items and the seed: two different studies never share answers in the browser."""
    digest = hashlib.sha256(json.dumps([items, seed], sort_keys=True).encode()).hexdigest()
    return f"spa-study-{digest[:10]}"


def selection(a: SplitScores, b: SplitScores, k: int, n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The ranked candidate classes (with both precisions) and the items, as (class rows, items)."""
    precision_a, precision_b = precision_at_n(a.scores, a.labels, n), precision_at_n(b.scores, b.labels, n)
    positives = a.labels.sum(axis=0)
    chosen = choose_classes(precision_a, precision_b, positives, k)
    ranked = choose_classes(precision_a, precision_b, positives, len(positives))
    classes = [
        {"mid": a.mids[c], "name": a.names[c], "positives": int(positives[c]), "chosen": c in chosen,
         "precision_a": round(float(precision_a[c]), 6), "precision_b": round(float(precision_b[c]), 6),
         "difference": round(float(precision_b[c] - precision_a[c]), 6)}
        for c in ranked
    ]  # fmt: skip
    items = [
        {"class_index": c, "clip_index": i}
        for c in chosen
        for i in choose_clips(a.scores[:, c], b.scores[:, c], n, seed, c)
    ]
    return classes, items


@dataclass
class RaterAnswers:
    """One rater's complete answers: item id -> (present, confidence 1-5); `missing` the items left unanswered."""

    path: str
    rater_id: str
    answers: dict[str, tuple[bool, int]]
    missing: list[str] = field(default_factory=list)


@dataclass
class Raters:
    """The answer files in use, and those excluded as (file, reason)."""

    used: list[RaterAnswers]
    excluded: list[tuple[str, str]]


def read_answer_file(path: str | Path, manifest: dict) -> RaterAnswers:
    """Parse and check one exported answer file; StudyError naming the file and every problem otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: unreadable ({err})") from err
    if not isinstance(data, dict) or data.get("format") != ANSWERS_FORMAT:
        raise StudyError(f"{path}: not an answer file of the listening page (format {_get(data, 'format')!r})")
    if data.get("study_id") != manifest["study_id"]:
        raise StudyError(f"{path}: answers for study {data.get('study_id')!r}, not {manifest['study_id']!r}")
    rater = data.get("rater_id")
    if not isinstance(rater, str) or not rater.strip():
        raise StudyError(f"{path}: no rater id")
    if not isinstance(data.get("answers"), dict):
        raise StudyError(f"{path}: no answers object")
    known = [item["item_id"] for item in manifest["items"]]
    answers, problems = _answers(data["answers"], set(known))
    if problems:
        raise StudyError(f"{path}: " + "; ".join(problems))
    missing = [item for item in known if item not in answers]
    return RaterAnswers(str(path), rater.strip(), answers, missing)


def _get(data, key: str):
    return data.get(key) if isinstance(data, dict) else None


def _answers(raw: dict, known: set[str]) -> tuple[dict[str, tuple[bool, int]], list[str]]:
    """The complete answers of a file (presence and confidence both given) and its problems.

    An item with neither is unanswered; one with only one of the two is unanswered too (the page saves as the rater
    goes), not a problem. Unknown items, an answer that is not an object (the page writes only objects, so "yes" or
    null is a damaged file, not a missing answer) and values outside yes/no and 1-5 are problems.
    """
    answers, problems = {}, []
    unknown = sorted(set(raw) - known)
    if unknown:
        problems.append(f"{len(unknown)} item(s) not in this study ({', '.join(unknown[:5])})")
    for item, answer in raw.items():
        if item not in known:
            continue
        present, confidence = _get(answer, "present"), _get(answer, "confidence")
        if not isinstance(answer, dict):
            problems.append(f"item {item}: an answer must be an object (present, confidence), got {answer!r}")
        elif present is not None and not isinstance(present, bool):
            problems.append(f"item {item}: present must be true or false, got {present!r}")
        elif confidence is not None and (type(confidence) is not int or not 1 <= confidence <= 5):
            problems.append(f"item {item}: confidence must be an integer 1-5, got {confidence!r}")
        elif present is not None and confidence is not None:
            answers[item] = (present, confidence)
    return answers, problems


def read_raters(paths: list[str], manifest: dict, skip_invalid: bool, allow_incomplete: bool) -> Raters:
    """All answer files, checked together: invalid, duplicate-rater and incomplete files fail the command, naming
    every problem, unless the flags let them through (`skip_invalid`: excluded; `allow_incomplete`: used)."""
    if not paths:
        raise StudyError("No answer files given")
    used, invalid, incomplete = [], [], []
    for path in paths:
        try:
            used.append(read_answer_file(path, manifest))
        except StudyError as err:
            invalid.append((str(path), str(err)))
    counts = Counter(rater.rater_id for rater in used)
    repeated = {rater for rater, count in counts.items() if count > 1}
    for rater in [r for r in used if r.rater_id in repeated]:
        invalid.append((rater.path, f"{rater.path}: rater id {rater.rater_id!r} is in {counts[rater.rater_id]} files"))
    used = [rater for rater in used if rater.rater_id not in repeated]
    incomplete = [r for r in used if r.missing]
    problems = [] if skip_invalid else [reason for _, reason in invalid]
    if incomplete and not allow_incomplete:
        total = len(manifest["items"])
        problems += [f"{r.path}: rater {r.rater_id!r} answered {total - len(r.missing)} of {total} items "
                     f"(pass --allow_incomplete to use partial files)" for r in incomplete]  # fmt: skip
    if problems:
        raise StudyError("The answer files cannot be combined as they are:\n  " + "\n  ".join(problems))
    if not used:
        raise StudyError("No valid answer file is left: " + "; ".join(reason for _, reason in invalid))
    return Raters(used, invalid)


def majority(votes: list[tuple[bool, int]], ties: str) -> int | None:
    """The human label of one item from its (present, confidence) votes: 1, 0, or None (no vote, or an unbroken tie).

    More yes than no: 1; more no than yes: 0. A tie: None with `ties="exclude"`; with `ties="confidence"` the side
    with the larger total confidence, None if the totals are equal too.
    """
    if ties not in TIES:
        raise StudyError(f"ties must be one of {TIES}, got {ties!r}")
    yes = [c for present, c in votes if present]
    no = [c for present, c in votes if not present]
    if len(yes) != len(no):
        return int(len(yes) > len(no))
    if not votes or ties == "exclude" or sum(yes) == sum(no):
        return None
    return int(sum(yes) > sum(no))


def combine(raters: list[RaterAnswers], item_ids: list[str], ties: str) -> dict[str, dict]:
    """Per item: yes and no counts, the human label (see `majority`), agreement and mean confidence."""
    combined = {}
    for item in item_ids:
        votes = [rater.answers[item] for rater in raters if item in rater.answers]
        label = majority(votes, ties)
        yes = sum(present for present, _ in votes)
        side = max(yes, len(votes) - yes)
        combined[item] = {
            "yes": yes,
            "no": len(votes) - yes,
            "human": label,
            "agreement": side / len(votes) if votes else None,
            "mean_confidence": float(np.mean([c for _, c in votes])) if votes else None,
        }
    return combined


def class_rows(manifest: dict, combined: dict, scores: dict, labels: dict) -> list[dict]:
    """Per studied class: items, labelled items, human positives, ties, agreement, confidence, and the APs of model
    a, model b and the dataset labels against the human labels (None without a human positive)."""
    rows = []
    for mid in dict.fromkeys(item["mid"] for item in manifest["items"]):
        items = [item for item in manifest["items"] if item["mid"] == mid]
        votes = [combined[item["item_id"]] for item in items]
        labelled = [item["item_id"] for item, vote in zip(items, votes, strict=True) if vote["human"] is not None]
        human = [combined[i]["human"] for i in labelled]
        answered = [vote for vote in votes if vote["yes"] + vote["no"] > 0]
        rows.append({
            "mid": mid, "name": items[0]["name"], "items": len(items), "labelled": len(labelled),
            "human_positives": int(sum(human)), "ties": sum(vote["human"] is None for vote in answered),
            "unanswered": len(votes) - len(answered), "unanimous": sum(vote["agreement"] == 1.0 for vote in answered),
            "mean_agreement": _mean([vote["agreement"] for vote in answered]),
            "mean_confidence": _mean([vote["mean_confidence"] for vote in answered]),
            "ap": {"a": _ap(human, [scores[i]["a"] for i in labelled]),
                   "b": _ap(human, [scores[i]["b"] for i in labelled]),
                   "dataset": _ap(human, [labels[i] for i in labelled])},
        })  # fmt: skip
    return rows


def _ap(human: list[int], values: list[float]) -> float | None:
    # The library's one AP (sklearn's step-wise formula and ties), for one class: NaN without a human positive.
    value = float(average_precision(np.array(human)[:, None], np.array(values)[:, None])[0]) if human else math.nan
    return None if math.isnan(value) else value


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def consistency(manifest: dict, scores_file: dict, labels_file: dict, raters: Raters, ties: str) -> dict:
    """Table 3: per row (model a, model b, dataset labels) the AP against the human labels per class and the mean over
    the classes that have an AP; with the agreement counts and every exclusion."""
    for name, data in (("scores.json", scores_file), ("labels.json", labels_file)):
        if data.get("study_id") != manifest["study_id"]:
            raise StudyError(f"{name} belongs to study {data.get('study_id')!r}, not {manifest['study_id']!r}")
    item_ids = [item["item_id"] for item in manifest["items"]]
    combined = combine(raters.used, item_ids, ties)
    classes = class_rows(manifest, combined, scores_file["items"], labels_file["items"])
    scored = [row for row in classes if row["ap"]["a"] is not None]
    rows = {key: {"name": name, "per_class": {row["mid"]: row["ap"][key] for row in classes},
                  "mean": float(np.mean([row["ap"][key] for row in scored])) if scored else None}
            for key, name in (("a", scores_file["models"]["a"]["name"]), ("b", scores_file["models"]["b"]["name"]),
                              ("dataset", "dataset labels"))}  # fmt: skip
    return {
        "study_id": manifest["study_id"],
        "raters": sorted(rater.rater_id for rater in raters.used),
        "excluded_files": [{"file": path, "reason": reason} for path, reason in raters.excluded],
        "incomplete_files": [
            {"file": r.path, "rater_id": r.rater_id, "missing": len(r.missing)} for r in raters.used if r.missing
        ],  # fmt: skip
        "ties": ties,
        "classes": classes,
        "classes_without_ap": [row["name"] for row in classes if row["ap"]["a"] is None],
        "rows": rows,
        "items": combined,
    }


def table_markdown(result: dict) -> str:
    """Table 3 as markdown: one row per model and the dataset labels, one column per class and the mean."""
    classes = result["classes"]
    header = "| | " + " | ".join(row["name"] for row in classes) + " | mean |"
    lines = [header, "|---|" + "---:|" * (len(classes) + 1)]
    for row in result["rows"].values():
        cells = [_cell(row["per_class"][c["mid"]]) for c in classes] + [_cell(row["mean"])]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", _summary(result)]
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary(result: dict) -> str:
    classes = result["classes"]
    items = sum(c["items"] for c in classes)
    labelled = sum(c["labelled"] for c in classes)
    parts = [
        f"Consistency score = average precision of each row's scores against the human majority labels. "
        f"{len(result['raters'])} rater(s); {labelled} of {items} items labelled "
        f"({sum(c['ties'] for c in classes)} tie(s) left out with ties={result['ties']}, "
        f"{sum(c['unanswered'] for c in classes)} without an answer); "
        f"{sum(c['unanimous'] for c in classes)} unanimous item(s)."
    ]
    if result["classes_without_ap"]:
        parts.append(f"No human positive, so no AP and not in the mean: {', '.join(result['classes_without_ap'])}.")
    if result["excluded_files"]:
        parts.append(f"{len(result['excluded_files'])} answer file(s) excluded: " + "; ".join(
            e["reason"] for e in result["excluded_files"]) + ".")  # fmt: skip
    if result["incomplete_files"]:
        parts.append(f"{len(result['incomplete_files'])} incomplete file(s) used: " + ", ".join(
            f"{e['rater_id']} ({e['missing']} missing)" for e in result["incomplete_files"]) + ".")  # fmt: skip
    return " ".join(parts)
