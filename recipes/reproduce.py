"""The SPA paper's Tables 1 and 2 and Fig. 3 for one backbone, in one command.

    python recipes/reproduce.py --backbone passt [--dataset agkphysics/AudioSet] \
        [--config recipes/configs/passt_audioset.yaml] [--styles] [--seeds 3] [--public_checkpoint] \
        [--output_dir outputs/reproduce/passt] [--launch_args "--num_processes 4"] [any train.py argument ...]

Trains, with `accelerate launch recipes/train.py CONFIG ...` (the user's accelerate config, plus --launch_args), the
paper's two models with the same data, settings and seed(s):
- w/o SPA: `--baseline wo_spa` (α = 0 with (L_BCE + L_OBCE)/2, the same architecture);
- w/ SPA: the config's α and description style (the paper's: α = 0.3, concat);
- with --styles, also w/ SPA for each description style direct, prompt, desc, concat (the paper's Table 2).
Every other argument goes to train.py unchanged (e.g. `--num_epochs 1`, `--dataset_config balanced`).

Runs live in OUTPUT_DIR/<run>/seed_<seed>. A finished run (its history.json and eval_results.json present) is not
redone; any other continues from its newest checkpoint (`--resume_from_checkpoint latest`; none: from the start).
Then it writes, in OUTPUT_DIR:
- table1.md / table1.json: mAP and OmAP w/o and w/ SPA and their paired difference (mean ± sample std over seeds),
  plus, with --public_checkpoint, the public checkpoint as is (its own AudioSet head, 527 labels);
- table2.md / table2.json (with --styles): mAP and OmAP per description style, with their differences to w/o SPA;
- omap_lambda_difference.png: Fig. 3, OmAP_λ(w/ SPA) − OmAP_λ(w/o SPA) per level λ, with the seeds' spread.
Numbers come from the test split (train.py's --test_split, or its --eval_split where a build has no separate test
split, as agkphysics/AudioSet); nothing is chosen on them. The weights are the EMA's (model_ema) where the config
keeps one, as the backbones' sources report their averaged weights, else the last (`--weights` chooses).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from modeling_spa.analysis.reporting import (
    Stat,
    format_stat,
    markdown_table,
    omap_lambda_differences,
    paired_difference,
    plot_omap_lambda_difference,
    stat,
)

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "recipes" / "train.py"
CONFIGS = REPO / "recipes" / "configs"
STYLES = ("direct", "prompt", "desc", "concat")  # the paper's Table 2, in its order
BASELINE = "wo_spa"
METRICS = ("map", "omap")
HEADER = ("mAP", "OmAP")
# Every AudioSet copy misses clips (videos taken down); the papers' authors evaluated on their own copies.
HUB_NOTE = (
    "agkphysics/AudioSet's test split holds 17,142 of the 20,371 clips of AudioSet's evaluation set: absolute numbers "
    "are not directly comparable with the papers', which were measured on other copies."
)


@dataclass(frozen=True)
class Run:
    """One training: `name` is its folder (wo_spa, spa_concat, ...), `arguments` what makes it that run."""

    name: str
    seed: int
    arguments: tuple[str, ...]

    def directory(self, root: Path) -> Path:
        return root / self.name / f"seed_{self.seed}"


# -- arguments --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the rest: train.py's arguments, passed on as they are."""
    # No abbreviations: `--seed 5` is train.py's seed, not `--seeds`.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--backbone", required=True, help="passt, ast, cnn14, htsat, psla (or demo_cnn with --config)")
    parser.add_argument("--dataset", help="train.py's --dataset (default: the config's)")
    parser.add_argument("--config", help="a train.py YAML (default: recipes/configs/<backbone>_audioset.yaml)")
    parser.add_argument("--styles", action="store_true", help="also train each description style (Table 2)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model: the config's seed, +1, +2, ...")
    parser.add_argument("--output_dir", help="default: outputs/reproduce/<backbone>")
    parser.add_argument("--weights", choices=("auto", "model", "model_ema"), default="auto",
                        help="which weights to report; auto: model_ema when the config keeps an EMA")  # fmt: skip
    parser.add_argument("--public_checkpoint", action="store_true",
                        help="add the public checkpoint as is (its own AudioSet head, 527 labels)")  # fmt: skip
    parser.add_argument("--launch_args", default="", help="accelerate launch options, e.g. '--num_processes 4'")
    args, train_arguments = parser.parse_known_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if "--baseline" in train_arguments:
        parser.error("--baseline is this script's to set: it trains both w/o SPA and w/ SPA")
    train_arguments = [*train_arguments, "--backbone", args.backbone]
    if args.dataset:
        train_arguments += ["--dataset", args.dataset]
    return args, train_arguments


def config_path(args: argparse.Namespace) -> Path:
    path = Path(args.config) if args.config else CONFIGS / f"{args.backbone}_audioset.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in CONFIGS.glob("*.yaml")))
        raise SystemExit(f"No config {path}: give --config (recipes/configs has {known}).")
    return path


def load_train_module():
    """recipes/train.py as a module, for its `parse_arguments`: this script resolves the settings exactly as the runs
    will (the YAML, then the command line), and refuses bad arguments before any run starts."""
    spec = importlib.util.spec_from_file_location("spa_train_recipe", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def report_split(data_args) -> str:
    """The split the tables report: the test split ("test" by default), or, with `--test_split ''`, the evaluation
    split (by default "validation", a hold-out of train where the dataset has none: modeling_spa.data.splits)."""
    if data_args.test_split is None:
        return "test"
    return data_args.test_split or data_args.eval_split or "validation"


# -- runs -------------------------------------------------------------------------------------------------------


def plan_runs(seeds: Sequence[int], spa_style: str, styles: bool) -> list[Run]:
    """Seed by seed, so that each finished seed gives a complete pair: w/o SPA, w/ SPA, then the other styles."""
    spa_styles = [spa_style] + ([s for s in STYLES if s != spa_style] if styles else [])
    runs = []
    for seed in seeds:
        runs.append(Run(BASELINE, seed, ("--baseline", "wo_spa")))
        runs += [Run(f"spa_{style}", seed, ("--description_style", style)) for style in spa_styles]
    return runs


def is_finished(run_dir: Path, folders: Sequence[str]) -> bool:
    """train.py writes history.json last, after every weights folder's eval_results.json."""
    done = [run_dir / folder / "eval_results.json" for folder in folders] + [run_dir / "history.json"]
    return all(path.is_file() for path in done)


def train_command(launch_args: str, config: Path, train_arguments: Sequence[str], run: Run, run_dir: Path) -> list[str]:
    # The run's own arguments come last: argparse keeps the last value of an option given twice.
    return [
        sys.executable, "-m", "accelerate.commands.launch", *shlex.split(launch_args), str(TRAIN), str(config),
        *train_arguments, *run.arguments, "--seed", str(run.seed), "--output_dir", str(run_dir),
        "--resume_from_checkpoint", "latest",
    ]  # fmt: skip


def train(command: list[str], log: Path) -> None:
    """One run, its output appended to `log` (a resumed run keeps the interrupted one's); on failure, stop."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n$ {shlex.join(command)}\n")
        handle.flush()
        done = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"train.py failed (exit {done.returncode}); the end of {log}:\n{log.read_text()[-3000:]}")
    print(f"    done in {time.perf_counter() - started:.0f} s (log: {log})", flush=True)


def check_settings(run_dir: Path, settings: dict) -> None:
    """Record what a run is trained with; refuse to reuse or resume a run trained with anything else."""
    record = run_dir / "reproduce_settings.json"
    if record.is_file() and (before := json.loads(record.read_text())) != settings:
        changed = sorted(key for key in settings.keys() | before.keys() if settings.get(key) != before.get(key))
        raise SystemExit(
            f"{run_dir} was trained with other settings ({', '.join(changed)} differ): delete it, or give another "
            f"--output_dir.\nbefore: {json.dumps(before)}\nnow:    {json.dumps(settings)}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2))


def run_settings(config: Path, command: Sequence[str]) -> dict:
    """The run's config values and train.py arguments; not its output directory nor the launcher's options (a run may
    move, and be resumed on other hardware), nor the config's comments."""
    arguments = list(command[command.index(str(TRAIN)) + 2 :])  # after train.py and the config's path
    cut = arguments.index("--output_dir")
    del arguments[cut : cut + 2]
    return {"config": yaml.safe_load(config.read_text()) or {}, "arguments": arguments}


def run_all(runs: Sequence[Run], root: Path, folders: Sequence[str], config: Path, command_for) -> None:
    for number, run in enumerate(runs, start=1):
        run_dir = run.directory(root)
        label = f"[{number}/{len(runs)}] {run.name}, seed {run.seed}"
        command = command_for(run, run_dir)
        check_settings(run_dir, run_settings(config, command))
        if is_finished(run_dir, folders):
            print(f"{label}: finished before, kept ({run_dir})", flush=True)
            continue
        resumed = any((run_dir / "checkpoints").glob("step_*"))
        print(f"{label}: {'resuming' if resumed else 'training'} in {run_dir}", flush=True)
        train(command, run_dir / "train.log")


def split_results(runs: Sequence[Run], root: Path, folder: str, split: str) -> dict[str, list[dict]]:
    """Per run name, its results on `split` in seed order."""
    results: dict[str, list[dict]] = {}
    for run in runs:
        evaluated = json.loads((run.directory(root) / folder / "eval_results.json").read_text())
        if split not in evaluated:
            raise SystemExit(f"{run.directory(root)}: no results for split {split!r} (has {sorted(evaluated)}).")
        results.setdefault(run.name, []).append(evaluated[split])
    return results


# -- the public checkpoint as is ----------------------------------------------------------------------------------


def public_checkpoint_results(model_args, data_args, split: str, batch_size: int) -> dict:
    """mAP, OmAP and OmAP_λ of a public checkpoint's own AudioSet head on `split`, over the 527 labels.

    A small evaluation loop over the library (the backbone's `audioset_scores`, its front-end preset, the collator
    train.py uses, `compute_omap`), on the GPU when there is one. To be replaced by recipes/evaluate.py once merged.
    """
    import torch
    from torch.utils.data import DataLoader

    from modeling_spa import compute_omap
    from modeling_spa.backbones import backbone_spec
    from modeling_spa.conversion import LOADERS, load_backbone
    from modeling_spa.data import AudioSetCollator, load_audioset
    from modeling_spa.frontend import LogMelFrontend, frontend_preset
    from modeling_spa.taxonomy import AudioSetOntology

    if data_args.classes:
        raise SystemExit("--public_checkpoint scores the 527 AudioSet labels: it cannot be used with --classes.")
    if not model_args.pretrained_backbone:
        raise SystemExit("--public_checkpoint needs a --pretrained_backbone to evaluate.")
    spec = backbone_spec(model_args.backbone)
    backbone = (
        load_backbone(model_args.backbone, model_args.pretrained_backbone) if model_args.backbone in LOADERS else None
    )
    if backbone is None or not hasattr(backbone, "audioset_scores"):
        raise SystemExit(f"The {model_args.backbone} backbone keeps no original AudioSet head: no 'as is' row.")
    settings = frontend_preset(model_args.frontend or spec.frontend_name(backbone.config))
    if not model_args.frontend and spec.max_frames(backbone.config) is not None:
        settings["max_frames"] = spec.max_frames(backbone.config)  # as SPAConfig sets it for fixed-size backbones
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    frontend = LogMelFrontend(**settings).to(device).eval()
    backbone = backbone.to(device).eval()
    mids = AudioSetOntology.load().label_mids
    rate, min_samples = settings["sampling_rate"], frontend.min_samples
    collator = AudioSetCollator(rate, mids, data_args.max_length_s, min_samples=min_samples)
    data = load_audioset(data_args.dataset, split, data_args.dataset_config)
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collator, num_workers=data_args.num_workers)
    scores, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            features, frame_mask = frontend(batch["input_values"].to(device), batch["attention_mask"].to(device))
            valid = batch["valid"].numpy()  # unreadable clips are left out, as train.py's evaluation does
            scores.append(backbone.audioset_scores(features, frame_mask).float().cpu().numpy()[valid])
            labels.append(batch["labels"].numpy()[valid])
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    if scores.shape[1] != len(mids):
        raise SystemExit(f"The checkpoint's head has {scores.shape[1]} outputs, not the {len(mids)} AudioSet labels.")
    result = compute_omap(labels, scores)  # the default distances: the 527 labels'
    return {
        "map": result["map"],
        "omap": result["omap"],
        "omap_per_lambda": result["omap_per_lambda"].tolist(),
        "n_classes_evaluated": result["n_classes_evaluated"],
        "clips": len(labels),
    }


def cached_public_results(root: Path, model_args, data_args, split: str, batch_size: int) -> dict:
    """The public row, computed once: a second invocation reads OUTPUT_DIR/public/eval_results.json."""
    path = root / "public" / "eval_results.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("checkpoint") == model_args.pretrained_backbone and split in cached:
        return cached[split]
    print(f"public checkpoint {model_args.pretrained_backbone} as is: scoring the {split} split", flush=True)
    result = public_checkpoint_results(model_args, data_args, split, batch_size)
    write_json(path, {split: result, "checkpoint": model_args.pretrained_backbone})
    return result


# -- tables -------------------------------------------------------------------------------------------------------


def cells(results: Sequence[dict]) -> dict[str, Stat]:
    return {key: stat([r[key] for r in results]) for key in METRICS}


def differences(results: Sequence[dict], baseline: Sequence[dict]) -> dict[str, Stat]:
    return {key: paired_difference([r[key] for r in results], [b[key] for b in baseline]) for key in METRICS}


def json_row(row: str, label: str, values: dict[str, Stat], **extra) -> dict:
    return {"row": row, "label": label, **{key: values[key].to_dict() for key in METRICS}, **extra}


def table1(results: dict[str, list[dict]], spa_run: str, alpha: float, public: dict | None, checkpoint: str | None):
    """JSON rows of Table 1: [the public checkpoint as is], w/o SPA, w/ SPA, their paired difference."""
    style = spa_run.removeprefix("spa_")
    rows = []
    if public is not None:
        rows.append(json_row("public", f"public checkpoint as is ({checkpoint})", cells([public])))
    rows.append(json_row(BASELINE, "w/o SPA: α = 0, (BCE + OBCE)/2", cells(results[BASELINE])))
    rows.append(json_row("spa", f"w/ SPA: α = {alpha:g}, {style} descriptions", cells(results[spa_run])))
    difference = differences(results[spa_run], results[BASELINE])
    rows.append(json_row("difference", "difference (w/ SPA − w/o SPA)", difference))
    return rows


def table2(results: dict[str, list[dict]]) -> list[dict]:
    """JSON rows of Table 2: w/o SPA, then w/ SPA per description style with its paired difference to w/o SPA."""
    rows = [json_row(BASELINE, "w/o SPA", cells(results[BASELINE]))]
    for style in STYLES:
        runs = results[f"spa_{style}"]
        gain = differences(runs, results[BASELINE])
        rows.append(json_row(f"spa_{style}", f"w/ SPA, {style}", cells(runs), difference=_to_dicts(gain)))
    return rows


def _to_dicts(values: dict[str, Stat]) -> dict:
    return {key: value.to_dict() for key, value in values.items()}


def _stat_of(cell: dict) -> Stat:
    return stat(cell["values"])


def markdown_table1(rows: Sequence[dict]) -> str:
    body = [
        [row["label"], *(format_stat(_stat_of(row[key]), signed=row["row"] == "difference") for key in METRICS)]
        for row in rows
    ]
    return markdown_table(["model", *HEADER], body)


def markdown_table2(rows: Sequence[dict]) -> str:
    body = []
    for row in rows:
        gain = row.get("difference")
        changes = [format_stat(_stat_of(gain[key]), signed=True) if gain else "" for key in METRICS]
        body.append([row["label"], *(format_stat(_stat_of(row[key])) for key in METRICS), *changes])
    return markdown_table(["description style", *HEADER, "ΔmAP", "ΔOmAP"], body)


def caption(context: dict) -> str:
    seeds = ", ".join(str(seed) for seed in context["seeds"])
    spread = "mean ± sample std over seeds; differences paired by seed" if len(context["seeds"]) > 1 else "one seed"
    lines = [
        f"Backbone {context['backbone']}; dataset {context['dataset']}"
        + (f" ({context['dataset_config']})" if context["dataset_config"] else "")
        + f"; **{context['split']} split**; weights `{context['weights']}`; seeds {seeds} ({spread}).",
        f"The {context['split']} split is only reported: no setting, run or checkpoint is chosen on it"
        + (
            " (train.py also scores it after each epoch, the build having no validation split; nothing reads those)."
            if context["monitored"]
            else "."
        ),
    ]
    if context["dataset"] == "agkphysics/AudioSet":
        lines.append(HUB_NOTE)
    return "\n".join(lines)


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False))


def write_outputs(root: Path, name: str, title: str, markdown: str, rows: list[dict], context: dict, **extra) -> None:
    document = f"## {title}\n\n{markdown}\n\n{caption(context)}\n"
    (root / f"{name}.md").write_text(document)
    write_json(root / f"{name}.json", {"table": title, **context, "rows": rows, **extra})
    print(f"\n{document}", flush=True)


def figure3(root: Path, results: dict[str, list[dict]], spa_run: str, context: dict) -> tuple[Path, dict]:
    """Fig. 3 as a PNG, and its numbers for table1.json."""
    diff = omap_lambda_differences(
        [r["omap_per_lambda"] for r in results[spa_run]], [r["omap_per_lambda"] for r in results[BASELINE]]
    )
    seeds = len(context["seeds"])
    title = f"{context['backbone']}, {context['split']} split: effect of SPA per ontology level ({seeds} seed(s))"
    path = plot_omap_lambda_difference(diff, root / "omap_lambda_difference.png", title=title,
                                       ylabel="OmAP_λ(w/ SPA) − OmAP_λ(w/o SPA)")  # fmt: skip
    numbers = {
        "mean": diff.mean(axis=0).tolist(),
        "std": diff.std(axis=0, ddof=1).tolist() if seeds > 1 else None,
        "per_seed": diff.tolist(),
    }
    return path, numbers


# -- main ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args, train_arguments = parse_args(sys.argv[1:] if argv is None else argv)
    config = config_path(args)
    model_args, data_args, _, train_args = load_train_module().parse_arguments([str(config), *train_arguments])
    if model_args.spa_alpha <= 0:
        raise SystemExit(f"The w/ SPA runs need α > 0 (the config gives spa_alpha {model_args.spa_alpha}).")
    if model_args.description_style not in STYLES:
        raise SystemExit(f"description_style {model_args.description_style!r} is not one of {STYLES}.")
    root = Path(args.output_dir or REPO / "outputs" / "reproduce" / args.backbone).resolve()
    root.mkdir(parents=True, exist_ok=True)
    split = report_split(data_args)
    weights = ("model_ema" if train_args.ema_decay else "model") if args.weights == "auto" else args.weights
    if weights == "model_ema" and not train_args.ema_decay:
        raise SystemExit("--weights model_ema needs an EMA: set ema_decay in the config or pass --ema_decay.")
    folders = ["model"] + (["model_ema"] if train_args.ema_decay else [])
    seeds = [train_args.seed + offset for offset in range(args.seeds)]
    runs = plan_runs(seeds, model_args.description_style, args.styles)

    def command_for(run: Run, run_dir: Path) -> list[str]:
        return train_command(args.launch_args, config, train_arguments, run, run_dir)

    run_all(runs, root, folders, config, command_for)
    results = split_results(runs, root, weights, split)
    public = None
    if args.public_checkpoint:
        public = cached_public_results(root, model_args, data_args, split, train_args.eval_batch_size)
    context = {
        "backbone": model_args.backbone,
        "dataset": data_args.dataset,
        "dataset_config": data_args.dataset_config,
        "split": split,
        "monitored": split == data_args.eval_split,
        "weights": weights,
        "seeds": seeds,
        "config": str(config),
        "train_arguments": train_arguments,
        "runs": {name: [str(run.directory(root)) for run in runs if run.name == name] for name in results},
    }
    spa_run = f"spa_{model_args.description_style}"
    plot_path, curve = figure3(root, results, spa_run, context)
    rows = table1(results, spa_run, model_args.spa_alpha, public, model_args.pretrained_backbone)
    title = f"Table 1: {model_args.backbone} w/o and w/ SPA"
    write_outputs(root, "table1", title, markdown_table1(rows), rows, context, omap_per_lambda_difference=curve)
    if args.styles:
        rows = table2(results)
        title = f"Table 2: {model_args.backbone}, w/ SPA per description style"
        write_outputs(root, "table2", title, markdown_table2(rows), rows, context)
    print(f"Fig. 3: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
