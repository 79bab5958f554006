"""`spa-tag FILE... --model DIR_OR_HUB_ID [--labels TEXT...]`: tag audio files with an SPA checkpoint.

Files are decoded with soundfile (wav, flac, ogg, mp3, ...) block by block, forward (exactly the samples of a
whole-file decode), mixed to mono and resampled to the model's rate as a stream, and scored window by window with
the windows and aggregation the model itself uses at inference (`modeling_spa.windowing`), so memory stays bounded
by a few windows whatever the file's length (`modeling_spa.tagging.files`; the reading and streaming are the
package's one reader, `modeling_spa.data.audio_files`, which the exported tagger uses too).

`--labels "dog barking" "church bells"` scores free label texts instead of the model's classes (zero-shot): the
cosine of the file's audio embedding E_a (the windows' mean weighted by their real samples, as the model takes it)
with p_t of each text embedded by the checkpoint's text encoder and description style
(`SPAForAudioClassification.embed_texts`). Cosines rank texts; they are not probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ..data import BadAudioError
from ..tagging.files import tag_file, text_cosines
from ..windowing import AGGREGATIONS, window_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spa-tag", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="audio files (any format soundfile reads)")
    parser.add_argument("--model", required=True, help="a saved SPA model folder or a Hub id")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--window-hop", type=float, default=None, help="seconds between windows (default: the model's window_hop_s)"
    )
    parser.add_argument(
        "--aggregation", choices=AGGREGATIONS, default=None, help="default: the model's window_aggregation (mean)"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="TEXT",
        help="score these label texts instead of the model's classes: the cosine of the file's audio embedding with "
        "each text's embedding (zero-shot; not probabilities), ranked",
    )
    parser.add_argument(
        "--text-encoder", help="with --labels: a local copy of the model's text encoder (default: its id)"
    )
    args = parser.parse_args(argv)

    # This package's __init__ has run, so SPA is registered with the Auto classes.
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(args.model).to(args.device).eval()
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    try:
        window_settings(model.config, args.window_hop, args.aggregation)
    except ValueError as err:
        parser.error(str(err))
    text_embeds = model.embed_texts(args.labels, args.text_encoder) if args.labels else None
    if text_embeds is not None and not args.json:
        print("cosine of each file's audio embedding with each text's (zero-shot): a ranking, not probabilities")
    failed = 0
    for path in args.files:
        try:
            if text_embeds is None:
                labels = tag_file(path, model, extractor, args.top_k, args.window_hop, args.aggregation)
            else:
                cosines = text_cosines(path, model, extractor, text_embeds, args.window_hop)
        except (BadAudioError, ValueError) as err:  # unreadable, or too short for one analysis window
            print(f"error: {err if isinstance(err, BadAudioError) else f'{path}: {err}'}", file=sys.stderr)
            failed += 1
            continue
        if text_embeds is not None:
            print_texts(path, args.labels, cosines, args.json)
            continue
        if args.json:
            print(json.dumps({"file": path, "labels": labels}))
            continue
        print(path)
        for item in labels:
            print(f"  {item['score']:.3f}  {item['label']:<40s} {item['path']}")
    return 1 if failed else 0


def print_texts(path: str, texts: list[str], cosines: np.ndarray, as_json: bool) -> None:
    """One file's text cosines, best first: a line each, or one JSON object."""
    ranked = [{"text": texts[i], "cosine": float(cosines[i])} for i in np.argsort(-cosines, kind="stable")]
    if as_json:
        print(json.dumps({"file": path, "texts": ranked}))
        return
    print(path)
    for item in ranked:
        print(f"  {item['cosine']:+.3f}  {item['text']}")


if __name__ == "__main__":
    sys.exit(main())
