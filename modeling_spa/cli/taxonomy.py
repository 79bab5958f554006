"""`spa-taxonomy`: check a taxonomy file (and a dataset's labels against it) and show what SPA and OmAP will use.

spa-taxonomy my_sounds/taxonomy.csv                               # nodes, classes, distances, label texts
spa-taxonomy my_sounds/taxonomy.csv --labels my_sounds/labels.csv # the labels a dataset uses, matched to it
spa-taxonomy my_sounds/taxonomy.csv --style desc --classes dog cat

Errors (unknown parents, cycles, duplicate ids or names, disconnected parts, unknown labels) name the rows or labels
and end the command with status 1.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..label_text import DEFAULT_PROMPT, DESCRIPTION_STYLES
from ..taxonomy import Taxonomy, read_taxonomy


def summary(taxonomy: Taxonomy, style: str, prompt_template: str = DEFAULT_PROMPT) -> str:
    """The taxonomy in a few lines: its size, its classes' distances and OmAP levels, and each class's label text."""
    kind = "flat label list (no hierarchy: no OBCE, no OmAP)"
    if taxonomy.has_hierarchy:
        distances = taxonomy.distances
        off = distances[~np.eye(len(distances), dtype=bool)]
        span = f"{off.min()}..{off.max()}" if off.size else "-"
        kind = f"hierarchy; class distances {span}, OmAP levels 0..{int(distances.max())}"
    lines = [f"{taxonomy!r}: {kind}.", "", f"class\tname\tlabel text ({style})"]
    texts = taxonomy.descriptions(style, prompt_template=prompt_template)
    lines += [f"{node}\t{taxonomy.name(node)}\t{text}" for node, text in zip(taxonomy.label_ids, texts, strict=True)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spa-taxonomy", description=__doc__.splitlines()[0])
    parser.add_argument("taxonomy", help="a JSON or CSV taxonomy file: id, name, parents, description")
    parser.add_argument("--classes", nargs="+", help="the classes, ids or names (default: the leaves)")
    parser.add_argument("--labels", help="a dataset (a CSV of files and labels, an audiofolder...) to match")
    parser.add_argument("--label_column", help="the dataset's label column")
    parser.add_argument("--style", choices=DESCRIPTION_STYLES, default="concat", help="label text style")
    args = parser.parse_args(argv)
    try:
        taxonomy = read_taxonomy(args.taxonomy, args.classes)
        if args.labels:
            from ..data.sources import open_own_data

            own = open_own_data(args.labels, label_column=args.label_column, taxonomy=taxonomy)
            taxonomy = own.taxonomy
            print(own.describe())
        print(summary(taxonomy, args.style))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
