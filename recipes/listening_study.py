"""The human-consistency study of the SPA paper (Table 3), end to end: pick the clips, a listening page, the scores.

    python recipes/listening_study.py select --scores_a outputs/eval/base-test --scores_b outputs/eval/spa-test \
        --name_a "baseline (α = 0)" --name_b "SPA (α = 0.3)" --dataset outputs/real_sounds/sources --split test \
        --output outputs/study [--classes 5 --clips_per_class 20 --seed 0]
    python recipes/listening_study.py select --model_a CKPT_A --model_b CKPT_B --dataset ... --output ...
    python recipes/listening_study.py page outputs/study            # writes outputs/study/page/index.html
    python recipes/listening_study.py score outputs/study answers-*.json [--allow_incomplete] [--skip_invalid]

`select` reads two score files (the folders `recipes/evaluate.py --save_scores` writes: scores.npy, labels.npy,
clip_ids.json, per_class.csv), or scores two checkpoints itself, on one split of an AudioSet-format dataset.

How classes and clips are chosen, and how answers are combined and scored: `modeling_spa.analysis.listening`.

One item is a (clip, class) pair. The study folder holds `page/` (what raters get: `clips/NNNN.wav`, 16 kHz PCM16
WAV, which every browser plays, and the page `index.html`), `manifest.json` (items: clip id, file, class mid,
name, ontology path and description; no score and no dataset label), `scores.json` (both models' score per item,
and the precision of every candidate class) and `labels.json` (the dataset's label per item). The page is built
from the manifest alone and loads nothing but its clips.

`score` combines the raters' answer files as the paper does (majority label, agreement, confidence; each model's
average precision against the human labels, per class) and writes table3.md and table3.json.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile

from modeling_spa.analysis.listening import (
    FORMAT_VERSION,
    PRECISION_DEFINITION,
    STUDY_FORMAT,
    TIES,
    SplitScores,
    StudyError,
    align,
    consistency,
    read_raters,
    read_scores,
    selection,
    study_id_of,
    table_markdown,
)
from modeling_spa.files import write_json

AUDIO_RATE = 16000  # the study's clips: 16 kHz PCM16 WAV, played by every browser
PAGE_TEMPLATE = Path(__file__).with_name("listening_page.html")
PAGE_DATA_MARK = "/*STUDY_DATA*/null"


# ---------------------------------------------------------------------------------------------------- select


def class_texts(mids: list[str]) -> dict[str, dict[str, str]]:
    """Ontology path (`A > B > C`, shortest path to the top) and description of each mid."""
    from modeling_spa.taxonomy import AudioSetOntology

    ontology = AudioSetOntology.load()
    return {
        mid: {"path": ontology.description(mid, "concat"), "description": ontology.nodes[mid].description}
        for mid in mids
    }


def clip_rows(dataset, clip_ids: list[str]) -> dict[str, int]:
    """Row index of each of `clip_ids` in `dataset` (its `video_id` column)."""
    index = {str(clip): row for row, clip in enumerate(dataset["video_id"])}
    missing = [clip for clip in clip_ids if clip not in index]
    if missing:
        raise StudyError(f"{len(missing)} scored clip(s) are not in the dataset split, e.g. {missing[:3]}")
    return {clip: index[clip] for clip in clip_ids}


def write_clip(audio: dict, clip_id: str, path: Path) -> float:
    """Decode a dataset row's audio, write it as 16 kHz mono PCM16 WAV at `path`; its duration in seconds."""
    from modeling_spa.data import decode_audio

    samples = decode_audio(audio, AUDIO_RATE, clip_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.clip(samples, -1.0, 1.0), AUDIO_RATE, subtype="PCM_16")
    return round(len(samples) / AUDIO_RATE, 3)


def clear_study(out: Path, overwrite: bool) -> None:
    """An existing study is replaced only with --overwrite, and then whole: its page (whose item -> clip map would
    play the new clips under the old classes) and its results go too. Checked before any model is scored."""
    if not (out / "manifest.json").exists():
        return
    if not overwrite:
        raise StudyError(f"{out} already holds a study (manifest.json); pass --overwrite to replace it")
    for stale in ("page", "results"):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "manifest.json").unlink()


def write_study(args, a: SplitScores, b: SplitScores, dataset) -> Path:
    """Write the study folder (see the module docstring) and return it."""
    out = Path(args.output)
    clear_study(out, args.overwrite)
    classes, picks = selection(a, b, args.classes, args.clips_per_class, args.seed)
    if not picks:
        raise StudyError("No class has a positive clip in the split: nothing to study")
    texts = class_texts([a.mids[p["class_index"]] for p in picks])
    clip_order = sorted({p["clip_index"] for p in picks})
    files = {i: f"clips/{number:04d}.wav" for number, i in enumerate(clip_order, start=1)}
    rows = clip_rows(dataset, [a.clip_ids[i] for i in clip_order])
    durations = {i: write_clip(dataset[rows[a.clip_ids[i]]]["audio"], a.clip_ids[i], out / "page" / files[i])
                 for i in clip_order}  # fmt: skip
    items, scores, labels = [], {}, {}
    for number, pick in enumerate(picks, start=1):
        c, i = pick["class_index"], pick["clip_index"]
        item_id = f"i{number:04d}"
        items.append({"item_id": item_id, "clip_id": a.clip_ids[i], "file": files[i], "mid": a.mids[c],
                      "name": a.names[c], **texts[a.mids[c]]})  # fmt: skip
        scores[item_id] = {"a": float(a.scores[i, c]), "b": float(b.scores[i, c])}
        labels[item_id] = int(a.labels[i, c])
    study_id = args.study_id or study_id_of(items, args.seed)
    manifest = {
        "format": STUDY_FORMAT,
        "version": FORMAT_VERSION,
        "study_id": study_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"source": args.dataset, "config": args.dataset_config, "split": args.split},
        "selection": {"classes": args.classes, "clips_per_class": args.clips_per_class, "seed": args.seed},
        "audio": {"format": "WAV PCM_16 mono", "sampling_rate": AUDIO_RATE},
        "clips": [{"clip_id": a.clip_ids[i], "file": files[i], "duration_s": durations[i]} for i in clip_order],
        "items": items,
    }
    model_scores = {
        "study_id": study_id,
        "models": {"a": {"name": a.name, "source": a.source}, "b": {"name": b.name, "source": b.source}},
        "precision": {"definition": PRECISION_DEFINITION, "n": args.clips_per_class, "classes": classes},
        "items": scores,
    }
    dataset_labels = {"study_id": study_id, "source": args.dataset, "split": args.split, "items": labels}
    write_json(out / "manifest.json", manifest)
    write_json(out / "scores.json", model_scores)
    write_json(out / "labels.json", dataset_labels)
    return out


def scores_of_models(args) -> tuple[SplitScores, SplitScores]:
    """Both models' split scores: read from score folders, or computed by recipes/evaluate.py into the study."""
    if args.scores_a and args.scores_b:
        return read_scores(args.scores_a, args.name_a), read_scores(args.scores_b, args.name_b)
    if not (args.model_a and args.model_b):
        raise StudyError("Give two score folders (--scores_a, --scores_b) or two checkpoints (--model_a, --model_b)")
    return score_model(args, args.model_a, "a", args.name_a), score_model(args, args.model_b, "b", args.name_b)


def score_model(args, model: str, key: str, name: str | None) -> SplitScores:
    """Score a checkpoint on the split with recipes/evaluate.py (--save_scores) into STUDY/model_scores/KEY."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recipe_evaluate", Path(__file__).with_name("evaluate.py"))
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = Path(args.output) / "model_scores" / key
    argv = ["--model", model, "--dataset", args.dataset, "--split", args.split, "--output_dir", str(out),
            "--save_scores", "--cpu", "--unknown_labels", args.unknown_labels,
            *(["--dataset_config", args.dataset_config] if args.dataset_config else [])]  # fmt: skip
    recipe.main(argv)
    return read_scores(out, name or Path(model).name)


def select(args) -> Path:
    from modeling_spa.data import load_audioset

    clear_study(Path(args.output), args.overwrite)  # before two evaluations write into it
    a, b = scores_of_models(args)
    b = align(a, b)
    dataset = load_audioset(args.dataset, args.split, args.dataset_config)
    out = write_study(args, a, b, dataset)
    print(f"Wrote the study to {out}: {len(json.loads((out / 'manifest.json').read_text())['items'])} items.")
    print(f"Next: python {Path(__file__).name} page {out}")
    return out


# ---------------------------------------------------------------------------------------------------- page


def read_manifest(study: str | Path) -> dict:
    path = Path(study) / "manifest.json"
    if not path.is_file():
        raise StudyError(f"{study} is no study folder: no manifest.json (run `select` first)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != STUDY_FORMAT:
        raise StudyError(f"{path} is not a study manifest (format {manifest.get('format')!r})")
    return manifest


def page_data(manifest: dict, title: str) -> dict:
    """What the page shows: the item ids, clip files and class texts. Never a score, never a dataset label."""
    items = [
        {key: item[key] for key in ("item_id", "file", "name", "path", "description")} for item in manifest["items"]
    ]
    return {"study_id": manifest["study_id"], "title": title, "items": items}


def render_page(manifest: dict, title: str) -> str:
    """The self-contained page: the template with the study data inlined (a page opened from disk cannot fetch)."""
    template = PAGE_TEMPLATE.read_text()
    if PAGE_DATA_MARK not in template:
        raise StudyError(f"{PAGE_TEMPLATE} lost its data mark {PAGE_DATA_MARK!r}")
    # "</" ends a script element and "<!--" puts the parser into a state where "</script>" does not: escape every
    # "<" as JSON allows, so no text of a class or title can change how the page parses.
    data = json.dumps(page_data(manifest, title), ensure_ascii=False).replace("<", "\\u003c")
    return template.replace(PAGE_DATA_MARK, data).replace("{{TITLE}}", html.escape(title))


def page(args) -> Path:
    manifest = read_manifest(args.study)
    path = Path(args.study) / "page" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(manifest, args.title))
    print(f"Wrote {path}: give raters the folder {path.parent} (index.html and clips/), nothing else.")
    return path


# ---------------------------------------------------------------------------------------------------- score


def score(args) -> dict:
    study = Path(args.study)
    manifest = read_manifest(study)
    scores_file = json.loads((study / "scores.json").read_text())
    labels_file = json.loads((study / "labels.json").read_text())
    raters = read_raters(args.answers, manifest, args.skip_invalid, args.allow_incomplete)
    result = consistency(manifest, scores_file, labels_file, raters, args.ties)
    out = Path(args.output or study / "results")
    markdown = table_markdown(result)
    write_json(out / "table3.json", result)
    (out / "table3.md").write_text(markdown)
    print(markdown)
    for _, reason in raters.excluded:
        print(f"excluded: {reason}", file=sys.stderr)
    print(f"Wrote {out / 'table3.md'} and {out / 'table3.json'}")
    return result


# ---------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    chooser = commands.add_parser("select", help="pick the classes and clips; write the study folder")
    chooser.add_argument("--scores_a", help="score folder of model a (recipes/evaluate.py --save_scores)")
    chooser.add_argument("--scores_b", help="score folder of model b")
    chooser.add_argument("--model_a", help="or a checkpoint, scored here on the split")
    chooser.add_argument("--model_b")
    chooser.add_argument("--name_a", help="model a's name in the table (default: the folder name)")
    chooser.add_argument("--name_b")
    chooser.add_argument("--dataset", required=True, help="the AudioSet-format dataset the scores are of")
    chooser.add_argument("--dataset_config")
    chooser.add_argument("--split", default="test")
    chooser.add_argument(
        "--unknown_labels",
        choices=("error", "ignore"),
        default="error",
        help="scoring checkpoints: labels outside the models' classes (as recipes/evaluate.py)",
    )
    chooser.add_argument("--classes", type=int, default=5, help="K, the classes studied (paper: 5)")
    chooser.add_argument("--clips_per_class", type=int, default=20, help="N, clips per class (paper: 20)")
    chooser.add_argument("--seed", type=int, default=0)
    chooser.add_argument("--study_id", help="default: derived from the items and the seed")
    chooser.add_argument("--output", required=True, help="the study folder")
    chooser.add_argument("--overwrite", action="store_true")
    pager = commands.add_parser("page", help="write the listening page, STUDY/page/index.html")
    pager.add_argument("study")
    pager.add_argument("--title", default="Listening study: is this sound in the clip?")
    scorer = commands.add_parser("score", help="combine the raters' answer files into Table 3")
    scorer.add_argument("study")
    scorer.add_argument("answers", nargs="+", help="answers-<rater>.json files exported by the page")
    scorer.add_argument("--ties", choices=TIES, default="exclude", help="how a tied vote is settled")
    scorer.add_argument("--skip_invalid", action="store_true", help="exclude invalid files instead of failing")
    scorer.add_argument("--allow_incomplete", action="store_true", help="use files that leave items unanswered")
    scorer.add_argument("--output", help="default: STUDY/results")
    args = parser.parse_args(argv)
    if args.command == "select" and (args.classes < 1 or args.clips_per_class < 1):
        parser.error("--classes and --clips_per_class must be at least 1")
    return args


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    return {"select": select, "page": page, "score": score}[args.command](args)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # StudyError, and the data errors of recipes/evaluate.py
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
