"""SPA on one's own data and taxonomy, on real recordings, with error bars: 5-fold cross-validation of four arms.

    python recipes/own_data_study.py [--sources outputs/real_sounds/sources] [--init_from outputs/demo-like/model] \
        [--output_dir outputs/own_data_study] [--jobs 2] [train.py arguments ...]

1. Builds a single-label folder dataset in the common layout (ESC-50's: `audio/` + `labels.csv` with file, label,
   fold) from the real recordings of `make real-sounds` (`--sources`, an AudioSet-format build): each recording gets
   one class of this study's own taxonomy (recipes/own_data/taxonomy.json: 18 fine classes under five coarse groups
   of our own naming, under one root) by the rules below, classes with fewer than 10 recordings (two per fold) are
   left out, and recordings are dealt into 5 folds stratified by class. A column `pretrain_pool` says which pool of
   the real-recording builds each recording is in: the transfer model was trained on mixtures of the `train` pool.
2. Trains, per fold, with the demo's config (recipes/configs/demo.yaml: the small CNN, 2 s crops, 4 epochs) through
   recipes/cross_validate.py: the CNN from scratch and the same network initialised from `--init_from` (the model
   `make demo` trains on the real-recording mixtures: `accelerate launch recipes/train.py recipes/configs/demo.yaml
   --dataset outputs/real_sounds/mixtures --classes outputs/real_sounds/mixtures/classes.json --output_dir
   outputs/demo-like`), re-headed to the new classes with SPA kept; each with α = 0 and with SPA (the config's α and
   objective). Single-label: softmax cross-entropy (+ α · L_SPA).
3. Reports accuracy, mAP and OmAP on the custom taxonomy over the test folds, mean ± std over the 5 folds, and the
   paired differences (same fold) with the paired t-test and Wilcoxon p-values: SPA vs α = 0 in each initialisation,
   transfer vs scratch at each α; also accuracy on the recordings the transfer model never heard in pre-training (the
   mixtures' validation and test pools). Writes OUTPUT_DIR/study.json and study.md, and copies them to
   recipes/results/own_data_study.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modeling_spa.analysis.reporting import format_stat, markdown_table, paired_test, stat
from modeling_spa.builds.folders import write_folder_dataset
from modeling_spa.taxonomy import AudioSetOntology, read_taxonomy

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "recipes" / "configs" / "demo.yaml"
TAXONOMY = REPO / "recipes" / "own_data" / "taxonomy.json"
RESULTS = REPO / "recipes" / "results" / "own_data_study"
METRICS = ("accuracy", "map", "omap")
FOLDS = 5
# Each fine class of the study's taxonomy and the AudioSet labels (full names) it takes, in priority order: a
# recording goes to the first class that takes one of its labels (["Chicken, rooster", "Cluck"] is a farm animal,
# ["Beatboxing"] a vocal sound, not a beat). Recordings with none of them ("Music", "Sound effect") are left out.
RULES = {
    "kick": ["Bass drum"],
    "snare": ["Snare drum", "Rimshot"],
    "tabla": ["Tabla"],
    "hihat": ["Hi-hat"],
    "cymbal": ["Cymbal"],
    "beat": ["Drum kit", "Drum machine", "Drum and bass", "Techno", "Electronic music"],
    "drum_hit": ["Drum"],
    "hand_percussion": ["Percussion", "Wood block", "Gong", "Cowbell", "Rattle (instrument)"],
    "speech": ["Speech", "Female speech, woman speaking"],
    "vocal": ["Singing", "Laughter", "Screaming", "Cough", "Sneeze", "Breathing", "Crying, sobbing",
              "Baby cry, infant cry", "Beatboxing"],
    "clapping": ["Clapping", "Applause", "Finger snapping"],
    "farm": ["Cattle, bovinae", "Pig", "Sheep", "Horse", "Goat", "Chicken, rooster", "Duck", "Goose",
             "Livestock, farm animals, working animals"],
    "wild": ["Dog", "Cat", "Wild animals", "Roaring cats (lions, tigers)", "Whale vocalization",
             "Rodents, rats, mice", "Insect", "Bee, wasp, etc."],
    "birds": ["Bird", "Owl", "Bird vocalization, bird call, bird song", "Crow"],
    "guitars": ["Guitar", "Electric guitar", "Acoustic guitar", "Bass guitar", "Plucked string instrument", "Harp"],
    "keys": ["Marimba, xylophone", "Organ", "Piano", "Electric piano"],
    "orchestral": ["Violin, fiddle", "Cello", "String section", "Trumpet", "Brass instrument", "Flute", "French horn",
                   "Trombone", "Didgeridoo"],
    "household": ["Door", "Whoosh, swoosh, swish", "Tick", "Squeak", "Beep, bleep", "Camera", "Scissors", "Typing",
                  "Hammer", "Glass", "Clang", "Train", "Bell", "Walk, footsteps", "Splash, splatter", "Explosion",
                  "Boom", "Crackle"],
}  # fmt: skip
# name -> (train.py flags, uses the transfer initialisation)
ARMS = {
    "scratch_wo_spa": (("--baseline", "wo_spa"), False),
    "scratch_spa": ((), False),
    "transfer_wo_spa": (("--baseline", "wo_spa"), True),
    "transfer_spa": ((), True),
}
COMPARISONS = (("scratch_spa", "scratch_wo_spa"), ("transfer_spa", "transfer_wo_spa"),
               ("transfer_wo_spa", "scratch_wo_spa"), ("transfer_spa", "scratch_spa"))  # fmt: skip


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--sources", default=str(REPO / "outputs" / "real_sounds" / "sources"))
    parser.add_argument("--init_from", default=str(REPO / "outputs" / "demo-like" / "model"))
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "own_data_study"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--results", default=str(RESULTS), help="where study.json/.md are copied (no suffix)")
    return parser.parse_known_args(argv)


def audioset_rules(ontology: AudioSetOntology) -> list[tuple[str, set[str]]]:
    """RULES with AudioSet names as mids; a name the ontology does not have is an error."""
    mid_of = {node.name: node_id for node_id, node in ontology.nodes.items()}
    if missing := sorted({name for names in RULES.values() for name in names} - set(mid_of)):
        raise ValueError(f"Not AudioSet names: {missing}")
    return [(name, {mid_of[label] for label in labels}) for name, labels in RULES.items()]


def build_dataset(sources: Path, out: Path) -> dict:
    """The folder dataset (once): every pool of the sources build, one class per recording, 5 stratified folds."""
    if (out / "build.json").is_file():
        return json.loads((out / "build.json").read_text())
    import datasets

    rows = []
    for split in ("train", "validation", "test"):
        part = datasets.load_dataset("parquet", data_files=str(sources / "data" / f"{split}-*.parquet"), split="train")
        rows += [dict(row, pretrain_pool=split) for row in part.cast_column("audio", datasets.Audio(decode=False))]
    summary = write_folder_dataset(rows, audioset_rules(AudioSetOntology.load()), out, folds=FOLDS, min_clips=10,
                                   extra=("pretrain_pool", "source", "licence"))  # fmt: skip
    print(f"Built {out}: {summary['clips']} recordings, {len(summary['classes'])} classes", flush=True)
    return summary


def load_recipe(name: str):
    """recipes/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"spa_{name}_recipe", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def arm_arguments(name: str, data: Path, init_from: str, extra: Sequence[str]) -> list[str]:
    flags, transfer = ARMS[name]
    common = [str(CONFIG), "--dataset", str(data / "labels.csv"), "--classes", "", "--taxonomy", str(TAXONOMY)]
    return [*common, *(("--init_from", init_from) if transfer else ()), *flags, *extra]


def evaluate_test_fold(run_dir: Path, data: Path, fold: str) -> Path:
    """recipes/evaluate.py on the fold's test recordings with their scores saved (once): for the accuracy on the
    recordings the transfer model never heard."""
    out = run_dir / "test_eval"
    if not (out / "scores.npy").is_file():
        evaluate = load_recipe("evaluate")
        evaluate.main(["--model", str(run_dir / "model"), "--dataset", str(data / "labels.csv"), "--taxonomy",
                       str(TAXONOMY), "--fold_column", "fold", "--test_fold", fold, "--split", "test",
                       "--save_scores", "--output_dir", str(out), "--num_workers", "0", "--cpu"])  # fmt: skip
    return out


def unseen_accuracy(out: Path, data: Path) -> float | None:
    """Top-1 accuracy on the test recordings outside the mixtures' train pool (`pretrain_pool` validation or test:
    never heard by the transfer model in pre-training); None when the fold holds none."""
    with open(data / "labels.csv", newline="") as handle:
        pool = {row["file"]: row["pretrain_pool"] for row in csv.DictReader(handle)}
    scores, labels = np.load(out / "scores.npy"), np.load(out / "labels.npy")
    ids = json.loads((out / "clip_ids.json").read_text())
    unseen = np.array([pool[clip] != "train" for clip in ids])
    if not unseen.any():
        return None
    return float((scores[unseen].argmax(1) == labels[unseen].argmax(1)).mean())


def summarise(per_arm: dict[str, dict[str, dict]]) -> dict:
    """Per arm: mean ± std over folds of each metric; per comparison: paired differences with their tests."""
    arms = {
        name: {
            m: stat([folds[f][m] for f in folds]).to_dict()
            for m in (*METRICS, "unseen_accuracy")
            if all(folds[f].get(m) is not None for f in folds)
        }  # fmt: skip
        for name, folds in per_arm.items()
    }
    comparisons = {}
    for a, b in COMPARISONS:
        if a in per_arm and b in per_arm:
            folds = sorted(set(per_arm[a]) & set(per_arm[b]))
            comparisons[f"{a} - {b}"] = {
                m: paired_test([per_arm[a][f][m] for f in folds], [per_arm[b][f][m] for f in folds])
                for m in METRICS
                if all(per_arm[x][f].get(m) is not None for x in (a, b) for f in folds)
            }
    return {"arms": arms, "comparisons": comparisons}


def markdown(summary: dict, context: dict) -> str:
    names = {"accuracy": "accuracy", "map": "mAP", "omap": "OmAP", "unseen_accuracy": "accuracy, unheard before"}
    keys = [k for k in (*METRICS, "unseen_accuracy") if any(k in a for a in summary["arms"].values())]
    rows = [[arm, *(format_stat(_stat(cells[k])) if k in cells else "n/a" for k in keys)]
            for arm, cells in summary["arms"].items()]  # fmt: skip
    table = markdown_table(["arm", *(names[k] for k in keys)], rows)
    diff_rows = []
    for label, tests in summary["comparisons"].items():
        for metric, test in tests.items():
            p_t = "n/a" if test["t_p"] is None else f"{test['t_p']:.3f}"
            p_w = "n/a" if test["wilcoxon_p"] is None else f"{test['wilcoxon_p']:.3f}"
            diff_rows.append([label, names[metric], format_stat(_stat(test["difference"]), signed=True), p_t, p_w])
    diffs = markdown_table(["comparison", "metric", "paired difference", "t-test p", "Wilcoxon p"], diff_rows)
    return (f"{context['caption']}\n\n{table}\n\nPaired differences over the {FOLDS} folds (same fold, same data; "
            f"two-sided tests; with 5 pairs no Wilcoxon p can fall below 0.0625):\n\n{diffs}\n")  # fmt: skip


def _stat(cell: dict):
    return stat(cell["values"])


def main(argv: Sequence[str] | None = None) -> dict:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(args.output_dir)
    data = root / "real_folder"
    built = build_dataset(Path(args.sources), data)
    taxonomy = read_taxonomy(TAXONOMY, list(built["classes"]))
    if any(ARMS[a][1] for a in args.arms) and not Path(args.init_from, "config.json").is_file():
        raise SystemExit(f"No transfer model at {args.init_from}: train it first (see this script's docstring).")
    cv = load_recipe("cross_validate")
    if args.jobs > 1:  # two trainers with one OpenMP pool per core each oversubscribe the CPU: share the cores out
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    per_arm = {}
    for arm in args.arms:
        print(f"== {arm}", flush=True)
        cv_args, train_arguments = cv.parse_args(["--fold_column", "fold", "--output_dir", str(root / arm),
                                                  "--jobs", str(args.jobs),
                                                  *arm_arguments(arm, data, args.init_from, extra)])  # fmt: skip
        result = cv.cross_validate(cv_args, train_arguments)
        per_arm[arm] = {fold: {m: metrics.get(m) for m in METRICS} for fold, metrics in result["per_fold"].items()}
        for fold in per_arm[arm]:
            out = evaluate_test_fold(root / arm / f"fold_{fold}", data, fold)
            per_arm[arm][fold]["unseen_accuracy"] = unseen_accuracy(out, data)
    summary = summarise(per_arm)
    context = {
        "caption": (
            f"Own data and own taxonomy, 5-fold cross-validation on real recordings: {built['clips']} recordings of "
            f"{len(built['classes'])} classes ({taxonomy!r}), single-label; the demo's CNN with the demo's config, "
            f"from scratch or from `{Path(args.init_from).parent.name}` (trained on the real-recording mixtures); "
            "test folds, mean ± sample std over folds."
        ),
        "dataset": built,
        "taxonomy": str(TAXONOMY.relative_to(REPO)),
        "init_from": Path(args.init_from).parent.name,
        "train_arguments_extra": extra,
    }
    study = {"context": context, **summary, "per_fold": per_arm}
    text = markdown(summary, context)
    for target in (root / "study", Path(args.results)):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".json").write_text(json.dumps(study, indent=1))
        target.with_suffix(".md").write_text(text)
    print(text)
    return study


if __name__ == "__main__":
    main()
