"""`spa-tag FILE... --model DIR_OR_HUB_ID`: tag audio files with an SPA checkpoint.

Files are decoded with soundfile (wav, flac, ogg, mp3, ...), mixed to mono and resampled to the model's rate.
A recording longer than the model's clip length is tagged window by window and the scores are averaged.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from .data import BadAudioError, decode_audio


def tag_file(path: str, model, extractor, top_k: int, windows_per_batch: int = 16) -> list[dict]:
    """The `top_k` labels of one file: label, mid, sigmoid score and ontology path, best first.

    Windows of the extractor's clip length are scored in batches; their mean is weighted by real length, so a
    short tail window counts for what it holds.
    """
    wave = decode_audio({"path": path}, extractor.sampling_rate, clip_id=path)
    window = int(extractor.max_length_s * extractor.sampling_rate) if extractor.max_length_s else len(wave)
    windows = [wave[start : start + window] for start in range(0, len(wave), window)]
    total, scores = 0.0, 0.0
    for first in range(0, len(windows), windows_per_batch):
        chunk = windows[first : first + windows_per_batch]
        inputs = extractor(chunk, sampling_rate=extractor.sampling_rate, padding="longest", return_tensors="pt")
        with torch.inference_mode():
            probabilities = model(**inputs.to(model.device)).logits.float().sigmoid().cpu().numpy()
        lengths = np.array([len(w) for w in chunk], dtype=np.float64)
        scores = scores + (probabilities * lengths[:, None]).sum(axis=0)
        total += lengths.sum()
    scores = scores / total
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
    args = parser.parse_args(argv)

    # This package's __init__ has run, so SPA is registered with the Auto classes.
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(args.model).to(args.device).eval()
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    failed = 0
    for path in args.files:
        try:
            labels = tag_file(path, model, extractor, args.top_k)
        except (BadAudioError, ValueError) as err:  # unreadable, or too short for one analysis frame
            print(f"error: {err if isinstance(err, BadAudioError) else f'{path}: {err}'}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": path, "labels": labels}))
            continue
        print(path)
        for item in labels:
            print(f"  {item['score']:.3f}  {item['label']:<40s} {item['path']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
