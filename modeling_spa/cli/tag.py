"""`spa-tag FILE... --model DIR_OR_HUB_ID [--labels TEXT...]`: tag audio files with an SPA checkpoint.

Files are decoded with soundfile (wav, flac, ogg, mp3, ...) block by block, forward (exactly the samples of a
whole-file decode), mixed to mono and resampled to the model's rate as a stream, and scored window by window with
the windows and aggregation the model itself uses at inference (`modeling_spa.windowing`), so memory stays bounded
by a few windows whatever the file's length. The reading and streaming are the exported tagger's
(`modeling_spa.onnx_tagger`).

`--labels "dog barking" "church bells"` scores free label texts instead of the model's classes (zero-shot): the
cosine of the file's audio embedding E_a (the windows' mean weighted by their real samples, as the model takes it)
with p_t of each text embedded by the checkpoint's text encoder and description style
(`SPAForAudioClassification.embed_texts`). Cosines rank texts; they are not probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np
import torch

from ..data import BadAudioError
from ..losses import label_similarity
from ..onnx_tagger import AudioFileError, batches, too_short
from ..onnx_tagger import file_windows as _file_windows
from ..windowing import AGGREGATIONS, WINDOWS_PER_BATCH, aggregate_embeds, aggregate_logits, window_settings


def file_windows(
    path: str, sampling_rate: int, window: int, hop: int, block_frames: int | None = None
) -> Iterator[np.ndarray]:
    """The windows of an audio file at `sampling_rate`, decoded forward in blocks and streamed: the exported
    tagger's code (`onnx_tagger.file_windows`), so both read every file alike.

    Raises `BadAudioError` naming the file when it is not a file, not audio, unreadable or holds NaN or inf.
    """
    try:
        yield from _file_windows(path, sampling_rate, window, hop, block_frames)
    except AudioFileError as err:
        raise BadAudioError(path, err.reason) from err


def file_outputs(
    path: str,
    model,
    extractor,
    hop_s: float | None = None,
    aggregation: str | None = None,
    windows_per_batch: int = WINDOWS_PER_BATCH,
) -> tuple[np.ndarray, torch.Tensor]:
    """Sigmoid scores (num_labels,) and audio embedding E_a (projection_dim,) of one file: its windows scored in
    batches and aggregated as the model does (scores by the aggregation, E_a by the mean weighted by real samples).

    The window length comes from the model's config; `hop_s` and `aggregation` override the config's. A file
    shorter than one analysis window of the model's front-end is a `BadAudioError`.
    """
    settings = window_settings(model.config, hop_s, aggregation)
    rate = extractor.sampling_rate
    min_samples = model.spa.frontend.min_samples
    logits, embeds, weights = [], [], []
    for batch in batches(file_windows(path, rate, settings.length, settings.hop), windows_per_batch):
        if len(batch[0]) < min_samples:  # only a whole file can be shorter than the window
            raise BadAudioError(path, too_short(len(batch[0]), rate, min_samples))
        # The extractor's defaults, as in the pipeline: a file shorter than the window is padded the same way.
        inputs = extractor(batch, sampling_rate=rate, return_tensors="pt")
        with torch.inference_mode():
            output = model(**inputs.to(model.device))
        logits.append(output.logits.float().cpu())
        embeds.append(output.audio_embeds.float().cpu())
        weights += [len(window) for window in batch]
    if not logits:  # an empty file, or one that resamples to nothing (1 sample at 96 kHz)
        raise BadAudioError(path, too_short(0, rate, min_samples))
    scores = aggregate_logits(torch.cat(logits), weights, settings.aggregation).sigmoid().numpy()
    return scores, aggregate_embeds(torch.cat(embeds), weights)


def file_scores(
    path: str,
    model,
    extractor,
    hop_s: float | None = None,
    aggregation: str | None = None,
    windows_per_batch: int = WINDOWS_PER_BATCH,
) -> np.ndarray:
    """The sigmoid scores (num_labels,) of `file_outputs`."""
    return file_outputs(path, model, extractor, hop_s, aggregation, windows_per_batch)[0]


def text_cosines(path: str, model, extractor, text_embeds: torch.Tensor, hop_s: float | None = None) -> np.ndarray:
    """Cosine of one file's E_a (`file_outputs`: the windows' mean, as `score_texts` takes it from the model) with
    each text's E_t (`model.embed_texts`), (texts,). Not probabilities."""
    audio_embeds = file_outputs(path, model, extractor, hop_s)[1]
    return label_similarity(audio_embeds[None], text_embeds.float().cpu())[0].numpy()


def tag_file(
    path: str, model, extractor, top_k: int, hop_s: float | None = None, aggregation: str | None = None
) -> list[dict]:
    """The `top_k` labels of one file: label, mid, sigmoid score and ontology path, best first."""
    scores = file_scores(path, model, extractor, hop_s, aggregation)
    config = model.config
    paths = config.label_paths or [""] * config.num_labels
    mids = config.label_mids or [""] * config.num_labels
    return [
        {"label": config.id2label[int(i)], "mid": mids[i], "score": float(scores[i]), "path": paths[i]}
        for i in np.argsort(-scores)[:top_k]
    ]


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
