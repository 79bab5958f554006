"""The SPA study: the baseline, the paper's Eq. 4 and the label-space countermeasures, over seeds, with paired tests.

    python recipes/spa_study.py --task real [--dataset outputs/real_sounds/mixtures] [--seeds 5] [--jobs 2] \
        [--variants wo_spa paper contrastive ...] [--output_dir outputs/spa_study/real] [train.py arguments ...]
    python recipes/spa_study.py --task synthetic --dataset outputs/synthetic/data ...

Every variant trains with the demo's config (recipes/configs/demo.yaml: the small CNN from scratch) at α = 0.3;
only its objective flags differ, and each variant sets all of them, so the config's own objective is never used.
The runs are recipes/reproduce.py's: OUTPUT_DIR/<variant>/seed_<seed>, finished runs kept, interrupted ones resumed
from their last checkpoint, runs recorded with other settings refused; `--jobs` trains that many at a time.
Variants are trained in the order given, all seeds of one before the next: a study cut short has whole variants.

From each run's eval_results.json it computes, per variant and split (validation, test), mAP, OmAP and the collapse
diagnostics as mean ± sample std over seeds; per SPA variant, the paired differences (same seed, same data) of mAP and
OmAP to the baseline and to the paper's objective, with a paired t-test and the Wilcoxon signed-rank test (both
two-sided); and the choice: the SPA variant with the highest mean validation OmAP. The test split is reported for
every variant and compared for the chosen one; nothing is chosen on it.
Writes OUTPUT_DIR/study.json, study.md and diagnostics.png (E_t mean cosine and margin per epoch), and merges the
task into --results (default recipes/results/spa_study.json).

The synthetic set: `python recipes/build_demo_dataset.py --output outputs/synthetic/data --duration 2`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from modeling_spa.analysis.reporting import (
    diagnostic_curves,
    format_stat,
    markdown_table,
    paired_test,
    plot_collapse_diagnostics,
    stat,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "recipes" / "configs" / "demo.yaml"
RESULTS = REPO / "recipes" / "results" / "spa_study.json"
TASKS = {"real": REPO / "outputs" / "real_sounds" / "mixtures", "synthetic": REPO / "outputs" / "synthetic" / "data"}
LAUNCH = "--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
BASELINE, PAPER = "wo_spa", "paper"
SPLITS = ("validation", "test")
METRICS = ("map", "omap")
DIAGNOSTICS = ("label_cos_mean", "label_ontology_spearman", "audio_cos_margin", "audio_label_auc")
ALPHA = 0.3  # the demo's α


def objective(name: str = "paper", temperature: float = 0.1, uniformity: float = 0.0, geometry: float = 0.0,
              frozen: bool = False, centred: bool = False) -> tuple[str, ...]:  # fmt: skip
    """Every objective flag of train.py, so that a variant never inherits one from the config."""
    return ("--spa_objective", name, "--spa_temperature", f"{temperature:g}",
            "--spa_uniformity_weight", f"{uniformity:g}", "--spa_geometry_weight", f"{geometry:g}",
            "--freeze_text_projection", str(frozen), "--center_label_text", str(centred))  # fmt: skip


# name -> (label, train.py flags). The baseline's α = 0 leaves p_t untrained, whatever its other flags.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    BASELINE: ("baseline: α = 0, (BCE + OBCE)/2", ("--baseline", "wo_spa", *objective())),
    PAPER: ("paper: Eq. 4, p_t learned with bias", objective()),
    "contrastive": ("contrastive, τ 0.1", objective("contrastive")),
    "frozen": ("p_t frozen", objective(frozen=True)),
    "geometry": ("geometry term, weight 1", objective(geometry=1.0)),
    "contrastive_centred": ("contrastive + centred T̂", objective("contrastive", centred=True)),
    "uniformity": ("uniformity term, weight 0.5", objective(uniformity=0.5)),
    "centred_frozen": ("centred T̂ + p_t frozen", objective(frozen=True, centred=True)),
}


def load_reproduce():
    """recipes/reproduce.py as a module: the study trains, records and reuses runs exactly as it does."""
    spec = importlib.util.spec_from_file_location("spa_reproduce_recipe", REPO / "recipes" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- arguments and runs -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options (with `args.data`, the dataset folder), and the rest: train.py's arguments, the same for
    every run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--dataset", help="an AudioSet-format build with classes.json (default: the task's)")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant: the config's seed, +1, +2, ...")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time")
    parser.add_argument("--output_dir", help="default: outputs/spa_study/<task>")
    parser.add_argument("--results", default=str(RESULTS), help="the committed JSON the task is merged into")
    args, train_arguments = parser.parse_known_args(argv)
    if BASELINE not in args.variants or PAPER not in args.variants:
        parser.error(f"--variants must include {BASELINE} and {PAPER}: every comparison is paired with them")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 for a paired test")
    for fixed in ("--spa_alpha", "--seed", "--baseline"):  # the study sets them, and records α as it sets it
        if any(a == fixed or a.startswith(f"{fixed}=") for a in train_arguments):
            parser.error(f"{fixed} is set by the study for every run; it cannot be passed through to train.py")
    args.data = Path(args.dataset or TASKS[args.task]).resolve()
    args.extra = train_arguments
    common = ["--dataset", str(args.data), "--classes", str(args.data / "classes.json"), "--spa_alpha", str(ALPHA)]
    return args, [*common, *train_arguments]


def plan_runs(reproduce, variants: Sequence[str], seeds: Sequence[int]) -> list:
    """Variant by variant, all seeds of one first: a study cut short has whole variants."""
    return [reproduce.Run(name, seed, VARIANTS[name][1]) for name in variants for seed in seeds]


def study_settings(reproduce, config: Path, command: Sequence[str]) -> dict:
    """reproduce's record of a run, less the config's objective keys: every variant sets them on the command line,
    so the demo's own choice in the config may change without invalidating the study's runs."""
    settings = reproduce.run_settings(config, command)
    keys = {flag.removeprefix("--") for flag in objective()[::2]} | {"spa_alpha"}
    settings["config"] = {k: v for k, v in settings["config"].items() if k not in keys}
    return settings


def train_runs(reproduce, runs: Sequence, root: Path, config: Path, train_arguments: Sequence[str], jobs: int) -> None:
    """Train what is not finished, `jobs` at a time; each run's log is OUTPUT_DIR/<variant>/seed_<seed>/train.log."""
    pending = []
    for run in runs:
        run_dir = run.directory(root)
        command = reproduce.train_command(LAUNCH, config, train_arguments, run, run_dir)
        reproduce.check_settings(run_dir, study_settings(reproduce, config, command))
        if not reproduce.is_finished(run_dir, ["model"]):
            pending.append((command, run_dir / "train.log"))
    print(f"{len(runs) - len(pending)} of {len(runs)} runs finished before; training {len(pending)}", flush=True)
    if jobs > 1:  # two trainers with one OpenMP pool per core each oversubscribe the CPU: share the cores out
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    run_parallel(reproduce.train, pending, jobs)


def run_parallel(function, tasks: Sequence[tuple], jobs: int) -> None:
    """`function(*task)` for each task, `jobs` at a time, in order. The first failure (a run's SystemExit with its
    log's end) cancels the tasks not yet started and is raised once the running ones end: a failed run stops the
    study instead of letting hours of queued runs go first."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(function, *task) for task in tasks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


# -- results ------------------------------------------------------------------------------------------------------


def collect(runs: Sequence, root: Path) -> dict[str, dict]:
    """Per variant: its runs' results per split (in seed order) and their histories (per-epoch diagnostics)."""
    results: dict[str, dict] = {}
    for run in runs:
        run_dir = run.directory(root)
        evaluated = json.loads((run_dir / "model" / "eval_results.json").read_text())
        entry = results.setdefault(run.name, {"seeds": [], "history": [], **{split: [] for split in SPLITS}})
        entry["seeds"].append(run.seed)
        entry["history"].append(json.loads((run_dir / "history.json").read_text()))
        for split in SPLITS:
            entry[split].append(evaluated[split])
    return results


def cells(results: Sequence[dict], keys: Sequence[str]) -> dict[str, dict]:
    return {key: stat([r[key] for r in results]).to_dict() for key in keys}


def comparison(results: dict[str, dict], name: str, other: str) -> dict:
    """Paired differences `name` − `other` of mAP and OmAP per split, with both tests."""
    if results[name]["seeds"] != results[other]["seeds"]:
        raise ValueError(f"{name} and {other} were trained with other seeds: they cannot be paired")
    return {
        split: {key: paired_test([r[key] for r in results[name][split]], [r[key] for r in results[other][split]])
                for key in METRICS}
        for split in SPLITS
    }  # fmt: skip


def choose(summary: dict) -> dict:
    """The SPA variant with the highest mean validation OmAP; the baseline's and the paper's for reference."""
    omap = {name: v["validation"]["omap"]["mean"] for name, v in summary.items()}
    candidates = [name for name in omap if name != BASELINE]
    best = max(candidates, key=omap.__getitem__)
    ranking = sorted(omap, key=omap.__getitem__, reverse=True)
    return {"variant": best, "by": "mean validation OmAP (the test split is never used to choose)",
            "ranking_by_validation_omap": ranking, "baseline_ranks": ranking.index(BASELINE) + 1}  # fmt: skip


def summarize(results: dict[str, dict]) -> dict:
    """Every variant's cells, every SPA variant's paired comparisons, and the choice."""
    variants = {
        name: {"label": VARIANTS[name][0], "flags": list(VARIANTS[name][1]), "seeds": entry["seeds"],
               **{split: cells(entry[split], (*METRICS, *DIAGNOSTICS)) for split in SPLITS}}
        for name, entry in results.items()
    }  # fmt: skip
    comparisons = {
        name: {f"vs_{BASELINE}": comparison(results, name, BASELINE)}
        | ({f"vs_{PAPER}": comparison(results, name, PAPER)} if name != PAPER else {})
        for name in results
        if name != BASELINE
    }
    choice = choose(variants)
    chosen = comparisons[choice["variant"]][f"vs_{BASELINE}"]
    choice["test_vs_baseline"] = chosen["test"]
    choice["validation_vs_baseline"] = chosen["validation"]
    return {"variants": variants, "comparisons": comparisons, "choice": choice}


# -- tables -------------------------------------------------------------------------------------------------------


def _cell(values: dict, signed: bool = False, digits: int = 3) -> str:
    return format_stat(stat(values["values"]), signed=signed, digits=digits)


def _p(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.2g}"


def _difference(test: dict) -> str:
    return f"{_cell(test['difference'], signed=True)} (t {_p(test['t_p'])}, W {_p(test['wilcoxon_p'])})"


def metrics_table(summary: dict) -> str:
    rows = [[v["label"], *(_cell(v[split][key]) for split in SPLITS for key in METRICS)]
            for v in summary["variants"].values()]  # fmt: skip
    header = ["variant", "validation mAP", "validation OmAP", "test mAP", "test OmAP"]
    return markdown_table(header, rows)


def differences_table(summary: dict, against: str) -> str:
    rows = []
    for name, compared in summary["comparisons"].items():
        if f"vs_{against}" in compared:
            tests = compared[f"vs_{against}"]
            cells_ = [_difference(tests[split][key]) for split in SPLITS for key in ("omap", "map")]
            rows.append([summary["variants"][name]["label"], *cells_])
    header = ["variant", "validation ΔOmAP", "validation ΔmAP", "test ΔOmAP", "test ΔmAP"]
    return markdown_table(header, rows)


def diagnostics_table(summary: dict) -> str:
    rows = [[v["label"], *(_cell(v["test"][key]) for key in DIAGNOSTICS)] for v in summary["variants"].values()]
    return markdown_table(["variant", "E_t mean cos", "E_t Spearman", "margin (test)", "AUC (test)"], rows)


def study_markdown(summary: dict, context: dict) -> str:
    choice = summary["choice"]
    seeds = len(next(iter(summary["variants"].values()))["seeds"])
    return "\n\n".join([
        f"### {context['task']} task: {context['dataset']} ({seeds} seeds; mean ± sample std)",
        metrics_table(summary),
        f"Paired differences to the baseline (same seed, same data), mean ± std, two-sided p of the paired t-test "
        f"(t) and of the Wilcoxon signed-rank test (W), n = {seeds}:",
        differences_table(summary, BASELINE),
        "Paired differences to the paper's objective:",
        differences_table(summary, PAPER),
        "Collapse diagnostics at the end of training (label figures from the model; margin and AUC on test):",
        diagnostics_table(summary),
        f"Chosen by mean validation OmAP: **{summary['variants'][choice['variant']]['label']}**; test ΔOmAP to the "
        f"baseline {_difference(choice['test_vs_baseline']['omap'])}. Validation OmAP ranking: "
        + ", ".join(choice["ranking_by_validation_omap"]) + ".",
    ])  # fmt: skip


def write_plot(results: dict[str, dict], choice: str, path: Path) -> Path:
    """E_t mean cosine and margin per epoch (validation), mean over seeds: baseline, paper and the chosen variant."""
    names = list(dict.fromkeys([BASELINE, PAPER, choice]))
    curves = {VARIANTS[name][0]: diagnostic_curves(results[name]["history"]) for name in names}
    return plot_collapse_diagnostics(curves, path)


def merge_results(path: Path, task: str, content: dict) -> None:
    """The committed JSON holds one entry per task; this task's replaces its old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[task] = content
    path.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args, train_arguments = parse_args(sys.argv[1:] if argv is None else argv)
    reproduce = load_reproduce()
    config = Path(args.config).resolve()
    root = Path(args.output_dir or REPO / "outputs" / "spa_study" / args.task).resolve()
    started = time.perf_counter()
    _, _, _, train_args = reproduce.load_train_module().parse_arguments([str(config), *train_arguments])
    seeds = [train_args.seed + offset for offset in range(args.seeds)]
    runs = plan_runs(reproduce, args.variants, seeds)
    train_runs(reproduce, runs, root, config, train_arguments, args.jobs)
    results = collect(runs, root)
    summary = summarize(results)
    # The build by its last two folders (real_sounds/mixtures): where it lies on this machine means nothing elsewhere.
    context = {"task": args.task, "dataset": "/".join(args.data.parts[-2:]), "config": "recipes/configs/demo.yaml"
               if config == CONFIG else config.name, "train_arguments": args.extra, "epochs": train_args.num_epochs,
               "seeds": seeds, "alpha": ALPHA}  # fmt: skip
    markdown = study_markdown(summary, context)
    content = {**context, **summary}
    (root / "study.json").write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
    (root / "study.md").write_text(markdown + "\n")
    write_plot(results, summary["choice"]["variant"], root / "diagnostics.png")
    merge_results(Path(args.results), args.task, content)
    print(f"\n{markdown}\n\nWritten: {root / 'study.json'}, {root / 'study.md'}, {args.results} "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
