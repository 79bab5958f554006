"""k-fold cross-validation in one command: recipes/train.py once per fold of a fold column, then each metric of the
test folds as mean ± std over the folds.

    python recipes/cross_validate.py --fold_column fold [--folds 1 2 3 4 5] [--output_dir outputs/cv] [--jobs 1] \
        --dataset my_sounds/labels.csv --taxonomy my_taxonomy.json [any other train.py argument]

Fold k trains on the other folds (less train.py's validation hold-out of them, `--validation_fraction`), validates on
that hold-out every epoch, and is tested on fold k: OUTPUT_DIR/fold_<k>, a train.py run with its model, card and
eval_results.json. Finished folds are kept and interrupted ones resumed from their last checkpoint; a fold trained with
other arguments is refused. Writes OUTPUT_DIR/cv_results.json (each fold's test metrics, and mean ± sample std of
accuracy (single-label data), mAP and OmAP (taxonomies with a hierarchy)) and cv_results.md, and prints the table.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modeling_spa.analysis.reporting import cross_validation_summary, cross_validation_table
from modeling_spa.data.sources import folds_of

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "recipes" / "train.py"
LAUNCH = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
OWN = ("--output_dir", "--test_fold", "--resume_from_checkpoint")  # set per fold by this script


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the rest: train.py's arguments, the same for every fold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--fold_column", required=True, help="the dataset column holding each clip's fold")
    parser.add_argument("--folds", nargs="+", help="the folds to test on (default: every value of the column)")
    parser.add_argument("--output_dir", default="outputs/cross_validation")
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at a time")
    parser.add_argument("--launch_args", default=" ".join(LAUNCH), help="accelerate launch's options")
    args, train_arguments = parser.parse_known_args(argv)
    for flag in OWN:
        if any(a == flag or a.startswith(f"{flag}=") for a in train_arguments):
            parser.error(f"{flag} is set by this script for each fold")
    return args, train_arguments


def load_train():
    """recipes/train.py as a module: its own argument parsing (a YAML config first, then flags) finds the dataset."""
    spec = importlib.util.spec_from_file_location("spa_train_recipe", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def dataset_folds(train_arguments: Sequence[str], fold_column: str) -> list[str]:
    """The values of the fold column in the dataset train.py's arguments name."""
    _, data_args, _, _ = load_train().parse_arguments([*train_arguments, "--fold_column", fold_column,
                                                       "--test_fold", "?"])  # fmt: skip
    return folds_of(data_args.dataset, fold_column, config_name=data_args.dataset_config,
                    data_dir=data_args.data_dir, audio_dir=data_args.audio_dir)  # fmt: skip


def fold_command(launch: Sequence[str], train_arguments: Sequence[str], fold_column: str, fold: str, out: Path):
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, str(TRAIN), *train_arguments,
            "--fold_column", fold_column, "--test_fold", fold, "--output_dir", str(out),
            "--resume_from_checkpoint", "latest"]  # fmt: skip


def is_finished(run_dir: Path) -> bool:
    """train.py writes history.json last, after the model's eval_results.json."""
    return (run_dir / "model" / "eval_results.json").is_file() and (run_dir / "history.json").is_file()


def check_record(run_dir: Path, arguments: Sequence[str]) -> None:
    """Record a fold's train.py arguments; refuse to reuse or resume a fold trained with others."""
    record = run_dir / "cv_arguments.json"
    if record.is_file() and json.loads(record.read_text()) != list(arguments):
        raise SystemExit(f"{run_dir} was trained with other arguments ({record}): delete it or give another "
                         "--output_dir.")  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(list(arguments), indent=1))


def train(command: list[str], log: Path) -> None:
    """One fold, its output appended to `log`; a failure stops the whole with the log's end."""
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n$ {shlex.join(command)}\n")
        handle.flush()
        # In the caller's folder: the dataset, taxonomy and output paths are relative to it, as for train.py itself.
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"train.py failed (exit {done.returncode}); the end of {log}:\n{log.read_text()[-3000:]}")
    print(f"  {log.parent.name} done in {time.perf_counter() - started:.0f} s", flush=True)


def run_folds(commands: Sequence[tuple[list[str], Path]], jobs: int) -> None:
    """Each (command, log), `jobs` at a time; the first failure cancels the folds not yet started."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(train, *task) for task in commands]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def test_metrics(run_dir: Path) -> dict:
    """A finished fold's metrics on its test fold (the model's eval_results.json)."""
    return json.loads((run_dir / "model" / "eval_results.json").read_text())["test"]


def cross_validate(args: argparse.Namespace, train_arguments: Sequence[str]) -> dict:
    """Train every fold not finished, then summarise the test folds; returns what cv_results.json holds."""
    root = Path(args.output_dir)
    folds = args.folds or dataset_folds(train_arguments, args.fold_column)
    pending = []
    for fold in folds:
        run_dir = root / f"fold_{fold}"
        check_record(run_dir, train_arguments)
        if not is_finished(run_dir):
            command = fold_command(shlex.split(args.launch_args), train_arguments, args.fold_column, fold, run_dir)
            pending.append((command, run_dir / "train.log"))
    print(f"{len(folds)} folds of {args.fold_column!r}: {len(folds) - len(pending)} finished before, training "
          f"{len(pending)}", flush=True)  # fmt: skip
    run_folds(pending, args.jobs)
    per_fold = {fold: test_metrics(root / f"fold_{fold}") for fold in folds}
    summary = cross_validation_summary(per_fold)
    result = {"fold_column": args.fold_column, "train_arguments": list(train_arguments), "summary": summary,
              "per_fold": per_fold}  # fmt: skip
    (root / "cv_results.json").write_text(json.dumps(result, indent=1))
    table = cross_validation_table(summary)
    (root / "cv_results.md").write_text(f"Test folds of {args.fold_column!r}, {len(folds)} folds.\n\n{table}\n")
    print(table)
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    args, train_arguments = parse_args(sys.argv[1:] if argv is None else argv)
    return cross_validate(args, train_arguments)


if __name__ == "__main__":
    main()
