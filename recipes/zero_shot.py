"""Zero-shot tags from new label texts, measured: hold classes out of training, score their texts by cosine.

    python recipes/zero_shot.py [--dataset outputs/real_sounds/mixtures] [--held_out MID_OR_NAME ...] \
        [--variants contrastive paper wo_spa] [--seeds 1] [--split test] [--output_dir outputs/zero_shot] \
        [any train.py argument, e.g. --num_epochs 4]

1. The classes: the dataset's `classes.json` less the held-out ones, written to OUTPUT_DIR/seen_classes.json.
2. Training, for each variant and seed, with `recipes/train.py CONFIG` (default recipes/configs/demo.yaml) on those
   classes with `--unknown_labels ignore`: the held-out labels are left out of every clip's labels, so the clips
   stay (their other labels too) and the held-out sounds are heard unlabelled, as a class missing from a
   vocabulary would be. Variants: `paper` (Eq. 4 alone), `contrastive` (`--spa_objective contrastive` alone),
   `wo_spa` (the baseline, α = 0: its p_t is never trained, the fair baseline for text scores). A finished run is not
   redone.
3. Scoring, on `--split` (default test; in the real-recording build its clips mix recordings of the test pool only,
   never heard in training): E_a of every clip, and the cosine with p_t(T(text)) (`embed_texts`, as `score_texts`)
   of two texts per class, seen or held out: its ontology path ("Animal > Domestic animals > Cat", the form the
   `concat` labels were trained on) and its name ("Cat", as a user would type it). Saved per run in
   RUN/zero_shot_<split>/ (`modeling_spa.analysis.zero_shot.save_scores`), so every AP can be recomputed.
4. Results: per held-out class, the AP of each text's cosines against the class's labels, per variant (mean ± sample
   std over seeds), and chance (the expected AP of a random ranking, `zero_shot.chance_ap`: above the positive rate
   for few positives); for context, the mean AP of the seen classes' texts.
   OUTPUT_DIR/zero_shot_<split>.md and zero_shot_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modeling_spa import SPAForAudioClassification
from modeling_spa.analysis.diagnostics import embed_split
from modeling_spa.analysis.reporting import format_stat, markdown_table, stat
from modeling_spa.analysis.zero_shot import load_scores, save_scores, text_results
from modeling_spa.data import load_audioset
from modeling_spa.losses import label_similarity
from modeling_spa.taxonomy import AudioSetOntology

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "recipes" / "train.py"
# Five of the real-recording build's 31 classes whose recordings carry no other of its labels (so holding them out
# takes no label from any seen class), one per kind of neighbourhood: Cat (its sibling Dog is seen), Hi-hat (its
# parent Cymbal is seen), Violin (bowed strings: none seen, other instruments are), Clapping (Human sounds seen,
# not Hands), Door (its top-level category, Sounds of things, has no seen class).
DEFAULT_HELD_OUT = ("/m/01yrx", "/m/03qtq", "/m/07y_7", "/m/0l15bq", "/m/02dgv")
# Each SPA variant alone, whatever the config's objective (demo.yaml adds the geometry term, the study's choice).
ALONE = ("--spa_geometry_weight", "0", "--spa_uniformity_weight", "0")
VARIANTS = {"contrastive": ("--spa_objective", "contrastive", *ALONE), "paper": ("--spa_objective", "paper", *ALONE),
            "wo_spa": ("--baseline", "wo_spa")}  # fmt: skip
TEXT_FORMS = ("path", "name")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the rest: train.py's arguments, passed on as they are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--dataset", default="outputs/real_sounds/mixtures", help="an AudioSet-format build")
    parser.add_argument("--classes", help="its classes JSON (default: DATASET/classes.json)")
    parser.add_argument("--held_out", nargs="+", default=list(DEFAULT_HELD_OUT), help="mids or full label names")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant: 0, 1, ...")
    parser.add_argument("--config", default=str(REPO / "recipes" / "configs" / "demo.yaml"))
    parser.add_argument("--split", default="test", help="the split scored (never tuned on)")
    parser.add_argument("--output_dir", default="outputs/zero_shot")
    parser.add_argument("--batch_size", type=int, default=64)
    args, train_arguments = parser.parse_known_args(argv)
    for owned in ("--classes", "--seed", "--output_dir", "--dataset", "--unknown_labels", "--baseline"):
        if owned in train_arguments:
            parser.error(f"{owned} is this script's to set")
    return args, train_arguments


def class_lists(args: argparse.Namespace, ontology: AudioSetOntology) -> tuple[list[str], list[str]]:
    """All the dataset's classes, and the held-out ones, as mids (names resolved; each must be a dataset class)."""
    path = Path(args.classes) if args.classes else Path(args.dataset) / "classes.json"
    classes = json.loads(path.read_text())
    mids = classes["mids"] if isinstance(classes, dict) else classes
    by_name = {ontology.name(mid, "full"): mid for mid in mids}
    held_out = [by_name.get(item, item) for item in args.held_out]
    if unknown := [item for item in held_out if item not in mids]:
        raise SystemExit(f"Held-out classes {unknown} are not among the {len(mids)} classes of {path}.")
    return mids, held_out


def check_run_settings(run_dir: Path, settings: dict) -> None:
    """A run folder holds one run: its settings (the command and the seen classes) are recorded when it starts, and a
    folder recorded with other settings is refused, so that a model trained on a class is never scored as if that
    class had been held out."""
    record = run_dir / "zero_shot_run.json"
    if record.is_file():
        if json.loads(record.read_text()) != settings:
            raise SystemExit(f"{run_dir} holds a run with other settings ({record}): choose another --output_dir, "
                             "or remove the folder to train it again.")  # fmt: skip
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SystemExit(f"{run_dir} holds files but no {record.name}: its settings are unknown; remove it or choose "
                         "another --output_dir.")  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=1))


def train(args, train_arguments: list[str], variant: str, seed: int, seen_file: Path, run_dir: Path) -> None:
    """One training run (kept when finished with the same settings, resumed when interrupted), its output appended
    to RUN_DIR/train.log."""
    command = [sys.executable, str(TRAIN), args.config, "--dataset", args.dataset, "--classes", str(seen_file),
               "--unknown_labels", "ignore", "--seed", str(seed), "--output_dir", str(run_dir),
               "--resume_from_checkpoint", "latest", *VARIANTS[variant], *train_arguments]  # fmt: skip
    settings = {"command": command[1:], "seen": json.loads(seen_file.read_text())}  # the interpreter's path aside
    check_run_settings(run_dir, settings)
    if (run_dir / "model" / "eval_results.json").is_file():
        return
    print(f"training {variant} seed {seed}: {' '.join(command)}", flush=True)
    with open(run_dir / "train.log", "a") as log:  # a resumed run keeps the log of its first part
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} seed {seed} failed (exit {done.returncode}); see {run_dir / 'train.log'}")


def texts_of(mids: Sequence[str], ontology: AudioSetOntology) -> tuple[list[str], list[int], list[str]]:
    """Two texts per class: its ontology path and its name; with the class index and the form of each text."""
    texts, classes, forms = [], [], []
    for index, mid in enumerate(mids):
        for form, text in zip(TEXT_FORMS, (ontology.description(mid, "concat"), ontology.name(mid)), strict=True):
            texts.append(text)
            classes.append(index)
            forms.append(form)
    return texts, classes, forms


@torch.no_grad()
def score_run(run_dir: Path, args, mids: list[str], held_out: list[str], ontology: AudioSetOntology) -> Path:
    """Cosines of every clip of the split with every class's texts, saved in RUN_DIR/zero_shot_<split>/."""
    folder = run_dir / f"zero_shot_{args.split}"
    saved = folder / "scores.json"
    if saved.is_file():
        kept = json.loads(saved.read_text())
        if (kept["classes"], kept["held_out"], kept["dataset"]) == (mids, held_out, args.dataset):
            return folder
    model = SPAForAudioClassification.from_pretrained(run_dir / "model").eval()
    split = load_audioset(args.dataset, args.split)
    audio_embeds, labels = embed_split(model, split, args.batch_size, label_mids=mids)
    if len(audio_embeds) != len(split):  # rows of skipped clips would not match the clip ids
        raise SystemExit(f"{len(split) - len(audio_embeds)} clip(s) of {args.split} could not be read.")
    texts, text_classes, forms = texts_of(mids, ontology)
    scores = label_similarity(audio_embeds, model.embed_texts(texts)).numpy()
    metadata = {
        "model": str(run_dir / "model"),
        "dataset": args.dataset,
        "split": args.split,
        "clip_ids": list(split["video_id"]),
        "classes": mids,
        "class_names": [ontology.name(mid, "full") for mid in mids],
        "held_out": held_out,
        "seen": list(model.config.label_mids),
        "texts": texts,
        "text_classes": text_classes,
        "text_forms": forms,
        "description_style": model.config.description_style,
        "note": "scores: cosine of E_a with p_t(T(text)), not probabilities; labels: multi-hot over classes",
    }
    return save_scores(folder, scores, labels.numpy(), metadata)


def run_results(folder: Path) -> dict:
    """Per text: AP, chance, positives, and whether its class was held out, from a run's saved scores."""
    scores, labels, meta = load_scores(folder)
    rows = text_results(scores, labels, meta["text_classes"])
    for row, text, index, form in zip(rows, meta["texts"], meta["text_classes"], meta["text_forms"], strict=True):
        mid = meta["classes"][index]
        row |= {"text": text, "mid": mid, "name": meta["class_names"][index], "form": form,
                "held_out": mid in meta["held_out"]}  # fmt: skip
    return {"texts": rows}


def summary(results: dict[str, list[dict]], held_out: list[str]) -> dict:
    """Per held-out class and text form: AP per variant over seeds, and chance; the mean over held-out classes;
    the mean AP over the seen classes' texts, for context."""
    table = {}
    for variant, runs in results.items():
        for form in TEXT_FORMS:
            rows = [[row for row in run["texts"] if row["form"] == form] for run in runs]
            for mid in held_out:
                per_seed = [next(row for row in run if row["mid"] == mid) for run in rows]
                base = {key: per_seed[0][key] for key in ("mid", "name", "text", "chance", "positives")}
                entry = table.setdefault(f"{mid}|{form}", {"form": form, "ap": {}} | base)
                entry["ap"][variant] = stat([row["ap"] for row in per_seed]).to_dict()
            for group, wanted in (("held-out mean", True), ("seen mean", False)):
                means = [float(np.nanmean([row["ap"] for row in run if row["held_out"] == wanted])) for run in rows]
                chance = float(np.nanmean([row["chance"] for row in rows[0] if row["held_out"] == wanted]))
                blank = {"mid": group, "name": group, "text": "", "chance": chance, "positives": None}
                entry = table.setdefault(f"{group}|{form}", {"form": form, "ap": {}} | blank)
                entry["ap"][variant] = stat(means).to_dict()
    return table


def markdown(table: dict, variants: list[str], seeds: int) -> str:
    header = ["class (text)", "positives", "chance AP", *[f"AP {variant}" for variant in variants]]
    lines = []
    for form in TEXT_FORMS:
        rows = []
        for entry in (e for e in table.values() if e["form"] == form):
            label = f"{entry['name']} (`{entry['text']}`)" if entry["text"] else f"**{entry['name']}**"
            cells = [format_stat(stat(entry["ap"][v]["values"]), digits=3) for v in variants]
            positives = "" if entry["positives"] is None else str(entry["positives"])
            rows.append([label, positives, f"{entry['chance']:.3f}", *cells])
        lines += [f"Texts: the class's {form}; {seeds} seed(s)", "", markdown_table(header, rows), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args, train_arguments = parse_args(sys.argv[1:] if argv is None else argv)
    ontology = AudioSetOntology.load()
    mids, held_out = class_lists(args, ontology)
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    seen_file = root / "seen_classes.json"
    seen_file.write_text(json.dumps({"mids": [mid for mid in mids if mid not in held_out], "held_out": held_out}))
    results = {}
    for variant in args.variants:
        for seed in range(args.seeds):
            run_dir = root / variant / f"seed_{seed}"
            train(args, train_arguments, variant, seed, seen_file, run_dir)
            folder = score_run(run_dir, args, mids, held_out, ontology)
            results.setdefault(variant, []).append(run_results(folder))
    table = summary(results, held_out)
    report = {"split": args.split, "held_out": held_out, "table": table, "runs": results}
    (root / f"zero_shot_{args.split}.json").write_text(json.dumps(report, indent=2))
    text = markdown(table, args.variants, args.seeds)
    (root / f"zero_shot_{args.split}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
