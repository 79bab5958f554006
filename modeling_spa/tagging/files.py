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
from ..windowing import WINDOWS_PER_BATCH, window_settings
from .scoring import WindowOutputs, aggregate_windows, forward_windows


def file_windows(
    path: str, sampling_rate: int, window: int, hop: int, block_frames: int | None = None, with_starts: bool = False
) -> Iterator[np.ndarray] | Iterator[tuple[int, np.ndarray]]:
    """The windows of an audio file at `sampling_rate`, decoded forward in blocks and streamed by the package's one
    reader (`data.audio_files.file_windows`, which the exported tagger uses too); with `with_starts`, (start in
    samples, window) pairs.

    Raises `BadAudioError` naming the file when it is not a file, not audio, unreadable or holds NaN or inf.
    """
    try:
        yield from _file_windows(path, sampling_rate, window, hop, block_frames, with_starts)
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
    """Sigmoid scores (num_labels,) and audio embedding E_a (projection_dim,) of one file: `file_window_outputs`
    aggregated as the model does (scores by the aggregation, E_a by the mean weighted by real samples)."""
    settings = window_settings(model.config, hop_s, aggregation)
    outputs, weights = file_window_outputs(path, model, extractor, hop_s, windows_per_batch)
    scores, audio_embeds, _ = aggregate_windows(outputs, weights, settings.aggregation)
    return scores, audio_embeds


def file_window_outputs(
    path: str, model, extractor, hop_s: float | None = None, windows_per_batch: int = WINDOWS_PER_BATCH
) -> tuple[WindowOutputs, list[int]]:
    """The outputs of each window of one file (logits, E_a, pooled embedding), scored in batches of this file's
    windows, and each window's real samples (the aggregation weights).

    The window length comes from the model's config; `hop_s` overrides the config's hop. A file shorter than one
    analysis window of the model's front-end is a `BadAudioError`.
    """
    settings = window_settings(model.config, hop_s)
    rate = extractor.sampling_rate
    min_samples = model.spa.frontend.min_samples
    parts, weights = [], []
    for batch in batches(file_windows(path, rate, settings.length, settings.hop), windows_per_batch):
        if len(batch[0]) < min_samples:  # only a whole file can be shorter than the window
            raise BadAudioError(path, too_short(len(batch[0]), rate, min_samples))
        # The extractor's defaults, as in the pipeline: a file shorter than the window is padded the same way.
        parts.append(forward_windows(model, extractor, batch))
        weights += [len(window) for window in batch]
    if not parts:  # an empty file, or one that resamples to nothing (1 sample at 96 kHz)
        raise BadAudioError(path, too_short(0, rate, min_samples))
    return WindowOutputs.cat(parts), weights


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
    return embedding_cosines(file_outputs(path, model, extractor, hop_s)[1], text_embeds)


def embedding_cosines(audio_embeds, text_embeds: torch.Tensor) -> np.ndarray:
    """Cosine of one E_a (D,) with each text's E_t (texts, D), (texts,)."""
    audio_embeds = torch.as_tensor(audio_embeds)
    return label_similarity(audio_embeds[None], text_embeds.float().cpu())[0].numpy()


def tag_file(
    path: str, model, extractor, top_k: int, hop_s: float | None = None, aggregation: str | None = None
) -> list[dict]:
    """The `top_k` labels of one file: label, mid, sigmoid score and ontology path, best first."""
    return top_labels(file_scores(path, model, extractor, hop_s, aggregation), model.config, top_k)


def top_labels(scores: np.ndarray, config, top_k: int) -> list[dict]:
    """The `top_k` best of one file's `scores`: label, mid, sigmoid score and ontology path, best first."""
    paths = config.label_paths or [""] * config.num_labels
    mids = config.label_mids or [""] * config.num_labels
    return [
        {"label": config.id2label[int(i)], "mid": mids[i], "score": float(scores[i]), "path": paths[i]}
        for i in np.argsort(-scores, kind="stable")[:top_k]
    ]
