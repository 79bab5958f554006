"""`spa-embed INPUT... --model DIR_OR_HUB_ID --output DIR`: embeddings of audio files, folders or a dataset.

Writes each file's E_a (the SPA audio embedding, in the audio-text space) and the backbone's pooled embedding, per
file (`DIR/files.parquet`) and per window with its start time (`DIR/windows.parquet`), equal to what the model returns
for the whole clip and for each window (`modeling_spa.tagging.embeddings`); `--numpy` also writes them as `.npy`
arrays. Inputs, windows and speed as for `spa-tag` (the same pipeline); started again with the same output, a run
continues where it stopped. Files that cannot be read are rows with their error and make the exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from ..tagging.embeddings import EmbeddingOutput
from ..tagging.runs import run_tagging
from .tag import add_model_arguments, add_source_arguments, collection_from, load_model, pipeline_options, print_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spa-embed", description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    add_model_arguments(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--output", required=True, metavar="DIR", help="the folder of files.parquet, windows.parquet")
    group.add_argument("--numpy", action="store_true", help="also write the embeddings as .npy arrays at the end")
    group.add_argument("--no-windows", action="store_true", help="per file only (no windows.parquet)")
    args = parser.parse_args(argv)
    collection = collection_from(args, parser)
    processes, model, extractor = load_model(args, parser)
    output = EmbeddingOutput(args.output, collection.keys, processes.rank, processes.world,
                             windows=not args.no_windows, numpy=args.numpy)  # fmt: skip
    summary = run_tagging(collection, model, extractor, [output], processes, **pipeline_options(args))
    print_summary(summary, args.output)
    return 1 if summary.any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
