"""Training curves of one or more runs of recipes/train.py, from their `history.json`: the losses, validation mAP
and OmAP, and the SPA diagnostics per epoch (`modeling_spa.analysis.reporting.plot_training_curves`).

    python recipes/plot_curves.py RUN_DIR [RUN_DIR ...] [--names NAME ...] [--output curves.png] [--title TEXT]

A run's name defaults to its folder ("paper/seed_0" for a `seed_N` folder, so that variants stay apart). The same
values are in the TensorBoard / trackio logs of a run with `--report_to tensorboard,trackio`; the history is read
here because every run has one, tracked or not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from modeling_spa.analysis.reporting import plot_training_curves


def run_name(folder: Path) -> str:
    """A run folder's name, with the variant in front of a `seed_N` folder."""
    folder = folder.resolve()
    return f"{folder.parent.name}/{folder.name}" if re.fullmatch(r"seed_\d+", folder.name) else folder.name


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (--output_dir of train.py)")
    parser.add_argument("--names", nargs="*", help="one name per run (default: from the folders)")
    parser.add_argument("--output", type=Path, default=Path("curves.png"))
    parser.add_argument("--title", default="")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    names = args.names or [run_name(run) for run in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"{len(names)} names for {len(args.runs)} runs")
    histories = {
        name: json.loads((run / "history.json").read_text()) for name, run in zip(names, args.runs, strict=True)
    }
    path = plot_training_curves(histories, args.output, args.title)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
