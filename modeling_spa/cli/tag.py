"""`spa-tag INPUT... --model DIR_OR_HUB_ID [--output TABLE]`: tag files, folders or a dataset with an SPA checkpoint.

Inputs are files, folders (walked recursively; `--include` patterns, default the audio extensions), list files
(`--list`) or a `datasets` build or Hub dataset (`--dataset`, `--split`, `--audio-column`). Each file is decoded
forward in blocks, mixed to mono, resampled to the model's rate as a stream and scored with the model's own windows
and aggregation, in worker processes feeding batches of windows of many files to the model
(`modeling_spa.tagging.pipeline`); the scores are those of the one-file path (`modeling_spa.tagging.files`).

With `--output` (CSV, JSON lines or Parquet, by extension) it writes one row per file (`modeling_spa.tagging.rows`),
continues where a killed run stopped (`modeling_spa.tagging.tables`) and shows a progress bar; without it, it prints
each file's top classes (`--json`: one JSON object per file). `--embeddings DIR` writes E_a and the pooled embedding
per file and per window (`modeling_spa.tagging.embeddings`). Files that cannot be tagged are named on stderr (and are
rows with their error) and make the exit status 1.

`--labels "dog barking" "church bells"` scores free label texts instead of the model's classes (zero-shot): the
cosine of the file's audio embedding E_a with p_t of each text embedded by the checkpoint's text encoder and
description style (`SPAForAudioClassification.embed_texts`). Cosines rank texts; they are not probabilities.

Under `accelerate launch -m modeling_spa.cli.tag ...` each process tags every n-th file and the main process merges
the outputs (`modeling_spa.tagging.runs`).

Decisions (`modeling_spa.cli.tag_decisions`, printed per file): `--threshold auto|NUMBER` lists the classes at or
above their threshold, `--ancestors` and `--level DEPTH` add ontology-consistent tags, `--events` the file's events
(onset, offset, score; `--events-dir` writes them as an Audacity label track and JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..feature_extraction_spa import SPAFeatureExtractor
from ..tagging.embeddings import EmbeddingOutput
from ..tagging.files import embedding_cosines, top_labels
from ..tagging.pipeline import tag_collection
from ..tagging.rows import TableLayout, model_layout
from ..tagging.runs import RunSummary, TableOutput, launched_processes, run_tagging
from ..tagging.sources import AUDIO_PATTERNS, collect_files, load_dataset_collection
from ..windowing import AGGREGATIONS, WINDOWS_PER_BATCH, window_settings
from .tag_decisions import Decisions, add_decision_arguments


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what to tag")
    group.add_argument("inputs", nargs="*", metavar="INPUT", help="audio files and folders (walked recursively)")
    group.add_argument("--include", action="append", metavar="PATTERN",
                       help=f"a folder's files to tag (repeatable; matched against the path inside the folder or the "
                            f"name, case-insensitive); default: {' '.join(AUDIO_PATTERNS)}")  # fmt: skip
    group.add_argument("--list", action="append", default=[], metavar="FILE",
                       help="a text file of paths, one a line (relative to its folder; repeatable)")  # fmt: skip
    group.add_argument("--dataset", help="a datasets build (save_to_disk or parquet folder) or a Hub dataset id")
    group.add_argument("--split", help="with --dataset: the split")
    group.add_argument("--dataset-config", help="with --dataset: the configuration (a Hub dataset's name)")
    group.add_argument("--audio-column", default="audio", help="with --dataset: the audio column (default: audio)")
    group.add_argument("--id-column", help="with --dataset: the column naming each row (default: video_id if any, "
                                           "else the row's number)")  # fmt: skip


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and speed")
    group.add_argument("--model", required=True, help="a saved SPA model folder or a Hub id")
    group.add_argument("--device", help="default: cuda when there is one (under accelerate launch: each process's)")
    group.add_argument("--window-hop", type=float, help="seconds between windows (default: the model's window_hop_s)")
    group.add_argument("--aggregation", choices=AGGREGATIONS, help="default: the model's window_aggregation (mean)")
    group.add_argument("--batch-size", type=int, default=WINDOWS_PER_BATCH, help="windows per model batch")
    group.add_argument("--workers", type=int, help="decoding processes (default: the cores left to this process)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spa-tag", description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    add_model_arguments(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--output", help="a table, one row per file: .csv, .jsonl or .parquet; started again with the "
                                        "same output, a run continues where it stopped")  # fmt: skip
    group.add_argument("--top-k", type=int, help="how many classes to list (default 5; with --threshold: all above)")
    group.add_argument("--all-scores", action="store_true", help="with --output: a column of every class's score")
    group.add_argument("--label-info", action="store_true", help="with --output: the top labels' mids and paths")
    group.add_argument("--embeddings", metavar="DIR", help="also write E_a and the pooled embedding per file and per "
                                                           "window to DIR (see spa-embed)")  # fmt: skip
    group.add_argument("--json", action="store_true", help="without --output: print one JSON object per file")
    group.add_argument("--labels", nargs="+", metavar="TEXT",
                       help="score these label texts instead of the model's classes: the cosine of the file's audio "
                            "embedding with each text's embedding (zero-shot; not probabilities), ranked")  # fmt: skip
    group.add_argument(
        "--text-encoder", help="with --labels: a local copy of the model's text encoder (default: its id)"
    )
    add_decision_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    collection = collection_from(args, parser)
    processes, model, extractor = load_model(args, parser)
    decisions = decisions_from(args, model, parser)
    text_embeds = model.embed_texts(args.labels, args.text_encoder) if args.labels else None
    values = None if text_embeds is None else (lambda result: embedding_cosines(result.audio_embeds, text_embeds))
    if args.output is None and args.embeddings is None:
        return print_results(args, collection, model, extractor, text_embeds, decisions)
    args.top_k = args.top_k or 5
    outputs = []
    share = {"order": collection.keys, "rank": processes.rank, "world": processes.world}
    if args.output is not None:
        if text_embeds is None:
            layout = model_layout(model.config, args.top_k, args.all_scores, args.label_info)
        else:
            layout = TableLayout(args.labels, args.top_k, args.all_scores, texts=True)
        outputs.append(TableOutput(args.output, layout, **share))
    if args.embeddings is not None:
        outputs.append(EmbeddingOutput(args.embeddings, **share))
    summary = run_tagging(collection, model, extractor, outputs, processes, values, **pipeline_options(args))
    print_summary(summary, args.output or args.embeddings)
    return 1 if summary.any_failed else 0


def collection_from(args, parser: argparse.ArgumentParser):
    """The files or dataset rows the arguments name (`--dataset` or inputs, not both)."""
    if args.dataset is not None:
        if args.inputs or args.list:
            parser.error("--dataset tags a dataset's rows: give no files, folders or --list with it")
        try:
            return load_dataset_collection(args.dataset, args.split, args.dataset_config, args.audio_column,
                                           args.id_column)  # fmt: skip
        except ValueError as err:
            parser.error(str(err))
        except ConnectionError as err:  # neither a local build nor a Hub dataset reachable now (offline, unknown id)
            where = "" if Path(args.dataset).exists() else "no such local folder or file, and "
            parser.error(f"--dataset {args.dataset}: {where}{err}")
    if not args.inputs and not args.list:
        parser.error("nothing to tag: give files, folders, --list FILE or --dataset")
    return collect_files(args.inputs, args.list, args.include)


def load_model(args, parser: argparse.ArgumentParser):
    """This process (`accelerate launch`: its rank), the model on its device in eval mode, and its extractor."""
    # This package's __init__ has run, so SPA is registered with the Auto classes.
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    cuda = torch.cuda.is_available() and args.device != "cpu"
    processes = launched_processes(cpu=not cuda)
    device = args.device or (f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
    model = AutoModelForAudioClassification.from_pretrained(args.model).to(device).eval()
    try:
        window_settings(model.config, args.window_hop, args.aggregation)
    except ValueError as err:
        parser.error(str(err))
    try:
        extractor = AutoFeatureExtractor.from_pretrained(args.model)
    except OSError:  # no preprocessor_config.json: a model saved alone, whose config says all the extractor does
        if (Path(args.model) / "preprocessor_config.json").is_file():
            raise
        extractor = SPAFeatureExtractor.for_model(model.config)
        print(
            f"{args.model} has no preprocessor_config.json: using the extractor its config implies "
            f"({extractor.sampling_rate} Hz, clips padded to {extractor.max_length_s:g} s)",
            file=sys.stderr,
        )
    return processes, model, extractor


def pipeline_options(args) -> dict:
    return {"hop_s": args.window_hop, "aggregation": args.aggregation, "batch_size": args.batch_size,
            "num_workers": args.workers, "progress": not args.no_progress}  # fmt: skip


def decisions_from(args, model, parser: argparse.ArgumentParser) -> Decisions | None:
    """The decision options (`tag_decisions`), which print per file: checked against the other options."""
    decisions = Decisions.from_args(args, model, parser)
    if decisions is None:
        return None
    if args.labels:
        parser.error(
            "--labels scores free texts; --threshold, --ancestors, --level and --events need the model's classes"
        )
    if args.output is not None or args.embeddings is not None:
        parser.error("--threshold, --ancestors, --level and --events print each file's decisions: not with --output or "
                     "--embeddings (a table's --all-scores holds every class's score to threshold)")  # fmt: skip
    if args.events and args.dataset is not None:
        parser.error("--events reads each file again window by window: give files or folders, not --dataset")
    return decisions


def print_results(args, collection, model, extractor, text_embeds, decisions: Decisions | None = None) -> int:
    """Each file's top classes (or ranked texts, or decisions) on stdout, in the order given; failures on stderr."""
    if text_embeds is not None and not args.json:
        print("cosine of each file's audio embedding with each text's (zero-shot): a ranking, not probabilities")
    options = pipeline_options(args)
    del options["progress"]
    failed = 0
    for result in tag_collection(collection, model, extractor, ordered=True, **options):
        if result.error is not None:
            print(f"error: {result.key}: {result.error}", file=sys.stderr)
            failed += 1
        elif decisions is not None:
            decisions.show(decisions.file_outputs(result.key, result.scores, model, extractor), args.json)
        elif text_embeds is not None:
            print_texts(result.key, args.labels, embedding_cosines(result.audio_embeds, text_embeds), args.json)
        else:
            print_labels(result.key, top_labels(result.scores, model.config, args.top_k or 5), args.json)
    return 1 if failed else 0


def print_labels(key: str, labels: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": key, "labels": labels}))
        return
    print(key)
    for item in labels:
        print(f"  {item['score']:.3f}  {item['label']:<40s} {item['path']}")


def print_texts(path: str, texts: list[str], cosines: np.ndarray, as_json: bool) -> None:
    """One file's text cosines, best first: a line each, or one JSON object."""
    ranked = [{"text": texts[i], "cosine": float(cosines[i])} for i in np.argsort(-cosines, kind="stable")]
    if as_json:
        print(json.dumps({"file": path, "texts": ranked}))
        return
    print(path)
    for item in ranked:
        print(f"  {item['cosine']:+.3f}  {item['text']}")


def print_summary(summary: RunSummary, output: str) -> None:
    hours = summary.audio_s / 3600
    line = (f"tagged {summary.tagged} file(s), {hours:.3f} h of audio, in {summary.elapsed_s:.1f} s; "
            f"{summary.failed} failed; {summary.skipped} already in {output}")  # fmt: skip
    if summary.rows is not None:
        line += f"; {output}: {summary.rows} row(s), {summary.failed_rows} with an error"
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
