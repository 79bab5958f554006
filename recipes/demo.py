"""`make demo`: a mini Table 1 of the SPA paper on real recordings, offline, on a 2-core CPU.

1. uses the real-recording mixtures of `make real-sounds` (outputs/real_sounds/mixtures: 31 AudioSet classes, 2-s
   clips; the test split holds only recordings never heard in training); where they cannot be had, it says so and
   falls back to the synthetic set of recipes/build_demo_dataset.py;
2. trains, with recipes/configs/demo.yaml (the small CNN from scratch, α = 0.3) and the same seeds (0, 1, 2 by
   default), the baseline (α = 0, (BCE + OBCE)/2), the paper's Eq. 4 and the SPA variant chosen by
   recipes/spa_study.py on the validation split (recipes/results/spa_study.json, the library's default objective),
   two runs at a time, through `accelerate launch recipes/train.py`;
3. prints Table 1, mean ± std over the demo's seeds with the paired difference to the baseline, beside the study's
   figures over its 5 seeds, and writes the OmAP_λ difference plot (paper Fig. 3) and the collapse diagnostics per
   epoch (E_t mean cosine, cosine margin);
4. reloads the SPA checkpoint (seed 0) with `AutoModel` and tags whole test recordings (the `sources` build's test
   pool), printing their true labels beside the top 5, how often a true label is in the top 1 and top 3 over every
   test recording of a trained class (SPA and baseline), and the `spa-tag` command for their files.

Outputs go to outputs/demo/. The numbers are reported as they come, whichever way they go.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from modeling_spa.analysis.reporting import (
    diagnostic_curves,
    format_stat,
    markdown_table,
    omap_lambda_differences,
    paired_difference,
    paired_test,
    plot_collapse_diagnostics,
    plot_omap_lambda_difference,
    stat,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "recipes" / "configs" / "demo.yaml"
STUDY_RESULTS = REPO / "recipes" / "results" / "spa_study.json"
LAUNCH = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
TAGGED_RECORDINGS = 6


def load_study():
    """recipes/spa_study.py as a module: its variants' flags and labels, so the demo trains exactly the study's runs."""
    spec = importlib.util.spec_from_file_location("spa_study_recipe", REPO / "recipes" / "spa_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shown(path: Path) -> Path:
    """A path as printed: relative to the repository when inside it (--output may be anywhere)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def run(command: list[str], log: Path) -> None:
    """Run a step, its output to `log`; on failure show the log's end and stop."""
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} ... failed; the end of {log}:\n" + log.read_text()[-3000:])
    print(f"  done in {time.perf_counter() - started:.0f} s (log: {shown(log)})", flush=True)


# -- data ---------------------------------------------------------------------------------------------------------


def real_data(real: Path) -> Path | None:
    """The real-recording mixtures, if `make real-sounds` built them (with their sources, for tagging)."""
    mixtures, sources = real / "mixtures", real / "sources"
    return mixtures if (mixtures / "classes.json").is_file() and (sources / "classes.json").is_file() else None


def synthetic_data(out: Path, args) -> Path:
    data = out / "data"
    if (data / "classes.json").is_file():
        print(f"  reusing {shown(data)}")
        return data
    print(f"  building the synthetic AudioSet-format set ({args.num_train} train clips of {args.seconds} s)")
    command = [sys.executable, str(REPO / "recipes" / "build_demo_dataset.py"), "--output", str(data),
               "--num-train", str(args.num_train), "--num-validation", str(args.num_eval),
               "--num-test", str(args.num_eval), "--duration", str(args.seconds)]  # fmt: skip
    run(command, out / "build.log")
    return data


# -- training -----------------------------------------------------------------------------------------------------


def demo_runs(study, chosen: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Table 1's rows: name -> (folder, train.py flags); the chosen variant's folder is `spa`, the tagging model's.
    Each trains once per seed, in <folder>/seed_<seed>."""
    runs = {study.BASELINE: ("baseline", study.VARIANTS[study.BASELINE][1])}
    runs[study.PAPER] = ("spa" if chosen == study.PAPER else "paper", study.VARIANTS[study.PAPER][1])
    runs[chosen] = ("spa", study.VARIANTS[chosen][1])
    return runs


def train_command(data: Path, flags: tuple[str, ...], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH, str(REPO / "recipes" / "train.py"),
            str(CONFIG), "--dataset", str(data), "--classes", str(data / "classes.json"), *flags,
            "--output_dir", str(run_dir)]  # fmt: skip


def finished_with(run_dir: Path, command: list[str]) -> bool:
    """Whether `run_dir` holds a finished run of exactly this command (its record, demo_command.json); a run of
    another command (an older config, the other dataset) is removed, so that its results are never shown as this
    one's."""
    record = run_dir / "demo_command.json"
    settings = {"command": command[1:], "config": CONFIG.read_text()}  # the interpreter's path does not matter
    if record.is_file() and json.loads(record.read_text()) == settings and (run_dir / "history.json").is_file():
        return True
    if run_dir.exists():
        print(f"  {shown(run_dir)} holds another or an unfinished run: training it again", flush=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    record.write_text(json.dumps(settings, indent=1))
    return False


def train_all(study, out: Path, data: Path, runs: dict, seeds: list[int], jobs: int) -> dict[str, dict]:
    """Train the runs not yet finished, `jobs` at a time; per model, its runs' test results and epoch histories in
    seed order."""
    pending = []
    for seed in seeds:  # seed by seed: a demo cut short has whole seeds
        for name, (folder, flags) in runs.items():
            run_dir = out / folder / f"seed_{seed}"
            command = train_command(data, (*flags, "--seed", str(seed)), run_dir)
            if not finished_with(run_dir, command):
                pending.append((command, run_dir.parent / f"train_seed_{seed}.log"))
                print(f"  {name}, seed {seed}: training in {shown(run_dir)}", flush=True)
    # One OpenMP pool per core: two trainers with a pool over both cores each would oversubscribe them.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    study.run_parallel(run, pending, jobs)

    def read(folder: str, name: str) -> list:
        return [json.loads((out / folder / f"seed_{seed}" / name).read_text()) for seed in seeds]

    return {
        name: {
            "test": [r["test"] for r in read(folder, "model/eval_results.json")],
            "history": read(folder, "history.json"),
        }
        for name, (folder, _) in runs.items()
    }


# -- Table 1 and the plots ----------------------------------------------------------------------------------------


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def study_cells(study_task: dict | None, name: str, chosen: str) -> list[str]:
    """The study's mean ± std of `name` on test (or its paired difference to the baseline, for 'difference')."""
    if study_task is None:
        return ["", ""]
    if name == "difference":
        tests = study_task["comparisons"].get(chosen, {}).get("vs_wo_spa", {}).get("test")
        if tests is None:
            return ["", ""]
        return [f"{format_stat(stat(tests[k]['difference']['values']), signed=True)} (p {_p(tests[k]['t_p'])})"
                for k in ("map", "omap")]  # fmt: skip
    variant = study_task["variants"].get(name)
    return ["", ""] if variant is None else [format_stat(stat(variant["test"][k]["values"])) for k in ("map", "omap")]


def _difference_cell(minuend: list[float], subtrahend: list[float]) -> str:
    """The paired difference over seeds, with the paired t-test's p where there are several."""
    test = paired_test(minuend, subtrahend) if len(minuend) > 1 else None
    cell = format_stat(paired_difference(minuend, subtrahend), signed=True)
    return cell if test is None else f"{cell} (p {_p(test['t_p'])})"


def table(results: dict[str, dict], labels: dict[str, str], chosen: str, study_task: dict | None, data: str) -> str:
    """The demo's test mAP and OmAP per model, mean ± std over its seeds, beside the study's over its seeds."""
    baseline = next(iter(results))
    values = {
        name: {k: [test[k] for test in result["test"]] for k in ("map", "omap")} for name, result in results.items()
    }
    rows = [[labels[name], *(format_stat(stat(values[name][k])) for k in ("map", "omap")),
             *study_cells(study_task, name, chosen)] for name in results]  # fmt: skip
    rows.append([f"{labels[chosen]} − baseline",
                 *(_difference_cell(values[chosen][k], values[baseline][k]) for k in ("map", "omap")),
                 *study_cells(study_task, "difference", chosen)])  # fmt: skip
    seeds = len(next(iter(results.values()))["test"])
    studied = len(study_task["seeds"]) if study_task else 0
    header = [f"model (demo CNN, {data} test split)", f"mAP, demo ({seeds} seeds)", f"OmAP, demo ({seeds} seeds)",
              f"mAP, study ({studied} seeds)", f"OmAP, study ({studied} seeds)"]  # fmt: skip
    return markdown_table(header, rows)


def plots(out: Path, results: dict[str, dict], labels: dict[str, str], chosen: str) -> None:
    baseline = next(iter(results))
    diff = omap_lambda_differences([test["omap_per_lambda"] for test in results[chosen]["test"]],
                                   [test["omap_per_lambda"] for test in results[baseline]["test"]])  # fmt: skip
    plot_omap_lambda_difference(diff, out / "omap_lambda_difference.png",
                                ylabel=f"OmAP_λ({chosen}) − OmAP_λ(baseline)")  # fmt: skip
    curves = {labels[name]: diagnostic_curves(result["history"]) for name, result in results.items()}
    plot_collapse_diagnostics(curves, out / "diagnostics.png")
    print(f"\nOmAP_λ difference plot: {shown(out / 'omap_lambda_difference.png')}")
    print(f"Collapse diagnostics per epoch: {shown(out / 'diagnostics.png')}")


# -- tagging ------------------------------------------------------------------------------------------------------


def pick_recordings(rows, classes: set[str], count: int) -> list[dict]:
    """Up to `count` rows carrying one of the model's classes, each with another first such label, in split order:
    a spread of the classes rather than the split's most common one."""
    picked, seen = [], set()
    for row in rows:
        known = [mid for mid in row["labels"] if mid in classes]
        if known and known[0] not in seen:
            seen.add(known[0])
            picked.append(row)
        if len(picked) == count:
            break
    return picked


def extracted_file(source: str) -> Path | None:
    """A sources row's recording as build_real_sounds.py extracted it ("package:path"), if it is still there."""
    package, _, path = source.partition(":")
    cache = Path(os.environ.get("SPA_CACHE", Path.home() / ".cache" / "modeling_spa")) / "real_sounds"
    found = cache / "extracted" / package / path
    return found if found.is_file() else None


def load_tagger(model_dir: Path):
    from transformers import AutoFeatureExtractor, AutoModel

    import modeling_spa  # noqa: F401  (registers SPA with the Auto classes)

    return AutoModel.from_pretrained(model_dir).eval(), AutoFeatureExtractor.from_pretrained(model_dir)


def top_k_hits(model_dirs: dict[str, Path], rows, ks: tuple[int, ...] = (1, 3)) -> str:
    """Per model, over every recording with a trained class: how often a true label is among the top k."""
    from modeling_spa.tagging import file_scores

    lines = []
    for name, model_dir in model_dirs.items():
        model, extractor = load_tagger(model_dir)
        known = set(model.config.label_mids)
        hits, total = dict.fromkeys(ks, 0), 0
        for row in rows:
            if not known & set(row["labels"]):
                continue
            order = file_scores(io.BytesIO(row["audio"]["bytes"]), model, extractor).argsort()[::-1]
            total += 1
            for k in ks:
                hits[k] += any(model.config.label_mids[i] in row["labels"] for i in order[:k])
        chance = {k: k / len(known) for k in ks}  # one true label among C classes, at least
        lines.append(f"  {name}: " + ", ".join(f"top {k} {hits[k]}/{total} ({hits[k] / total:.0%}; a random ranking "
                                               f"≥ {chance[k]:.0%})" for k in ks))  # fmt: skip
    return "\n".join(lines)


def tag_recordings(model_dir: Path, baseline_dir: Path, split_files: str, count: int, what: str) -> None:
    """Tag whole test recordings as spa-tag does (the model's windows and aggregation), true labels beside the top 5."""
    import datasets

    from modeling_spa.tagging import file_scores

    model, extractor = load_tagger(model_dir)
    names = dict(zip(model.config.label_mids, model.config.label_names, strict=True))
    rows = datasets.load_dataset("parquet", data_files=split_files, split="train")
    print(f"\nAutoModel.from_pretrained({shown(model_dir)}) tags {count} {what}, each whole, in the model's "
          "windows, as spa-tag does:")  # fmt: skip
    commands = []
    for row in pick_recordings(rows, set(names), count):
        scores = file_scores(io.BytesIO(row["audio"]["bytes"]), model, extractor)
        true = [names[mid] for mid in row["labels"] if mid in names]
        other = [name for mid, name in zip(row["labels"], row["human_labels"], strict=True) if mid not in names]
        print(f"\n  {row.get('source', row['video_id'])}")
        print(f"    true: {'; '.join(true)}" + (f"  (also, not a trained class: {'; '.join(other)})" if other else ""))
        for rank, i in enumerate(scores.argsort()[::-1][:5], start=1):
            mark = "*" if model.config.label_mids[i] in row["labels"] else " "
            print(f"    {rank}. {mark} {scores[i]:.3f}  {model.config.id2label[int(i)]}")
        if (path := extracted_file(row.get("source", ""))) is not None:
            commands.append(str(path))
    print("\n  (* = a true label)")
    print(f"\nOver all {what} with a trained class, a true label among the top k (seed 0's models):")
    print(top_k_hits({"SPA": model_dir, "baseline": baseline_dir}, rows))
    if commands:
        files = " ".join(f"'{c}'" for c in commands[:3])
        print(f"\nThe same with spa-tag on the recordings' files:\n  spa-tag {files} --model {model_dir} --top-k 3")


# -- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "outputs" / "demo"))
    parser.add_argument("--real-sounds", default=str(REPO / "outputs" / "real_sounds"),
                        help="the output folder of `make real-sounds` (sources/ and mixtures/)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model: 0, 1, ...")
    parser.add_argument("--num-train", type=int, default=1200, help="synthetic fallback: train clips")
    parser.add_argument("--num-eval", type=int, default=300, help="synthetic fallback: validation and test clips")
    parser.add_argument("--seconds", type=float, default=2.0, help="synthetic fallback: clip length")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    study = load_study()
    study_results = json.loads(STUDY_RESULTS.read_text())
    chosen = study_results["real"]["choice"]["variant"]  # the demo's settings are the real task's

    print("[1/4] data")
    data = real_data(Path(args.real_sounds).resolve())
    if data is not None:
        task, described = "real", "real-recording"
        print(f"  real-recording mixtures: {data}")
    else:
        task, described = "synthetic", "synthetic"
        print(f"  NOTE: no real-recording build in {args.real_sounds} (`make real-sounds` makes it; it needs the "
              "pinned Debian packages, through apt-get or put in its cache by hand): falling back to the synthetic "
              "set. Its numbers say even less about AudioSet than the real recordings'.")  # fmt: skip
        data = synthetic_data(out, args)

    runs = demo_runs(study, chosen)
    labels = {name: study.VARIANTS[name][0] for name in runs}
    seeds = list(range(args.seeds))
    print(f"[2/4] training {', '.join(labels.values())} (seeds {seeds}, {args.jobs} at a time)")
    results = train_all(study, out, data, runs, seeds, args.jobs)

    print("\n[3/4] Table 1 (test split)\n")
    rendered = table(results, labels, chosen, study_results.get(task), described)
    print(rendered)
    (out / "table1.md").write_text(rendered + "\n")
    plots(out, results, labels, chosen)

    print("\n[4/4] tagging")
    model_dir, baseline_dir = out / "spa" / "seed_0" / "model", out / "baseline" / "seed_0" / "model"
    if task == "real":
        sources = str(data.parent / "sources" / "data" / "test-*.parquet")
        tag_recordings(
            model_dir, baseline_dir, sources, TAGGED_RECORDINGS, "real test recordings (never heard in training)"
        )
    else:
        tag_recordings(model_dir, baseline_dir, str(data / "data" / "test-*.parquet"), 3, "synthetic test clips")
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
