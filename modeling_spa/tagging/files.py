"""Tagging one file: its windows streamed from disk (`data.audio_files`), scored in batches by the model and
aggregated as the model aggregates at inference (`windowing`), so a file of any length costs a few windows of memory
and gets the scores the model gives the whole clip (`spa-tag` and the audio-classification pipeline agree)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..data import BadAudioError
from ..data.audio_files import AudioFileError, batches, too_short
from ..data.audio_files import file_windows as _file_windows
from ..losses import label_similarity
from ..windowing import WINDOWS_PER_BATCH, aggregate_embeds, aggregate_logits, window_settings


def file_windows(
    path: str, sampling_rate: int, window: int, hop: int, block_frames: int | None = None
) -> Iterator[np.ndarray]:
    """The windows of an audio file at `sampling_rate`, decoded forward in blocks and streamed by the package's one
    reader (`data.audio_files.file_windows`, which the exported tagger uses too).

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
