"""AudioSet-format data: loading a `datasets` build, decoding audio, multi-hot labels, batching.

Audio stays `Audio(decode=False)` ({bytes, path}) in the dataset and is decoded here with soundfile + soxr,
inside DataLoader workers (datasets 5 decodes only through torchcodec, which needs CUDA torch; DESIGN.md §5).
A clip that cannot be used (missing, unreadable, empty, too short, NaN/inf, truncated) is skipped and reported by
id; the training loop counts the skips in its epoch summary.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr
import torch


class BadAudioError(ValueError):
    """A clip whose audio cannot be used; `clip_id` names it."""

    def __init__(self, clip_id: str, reason: str):
        super().__init__(f"clip {clip_id}: {reason}")
        self.clip_id = clip_id
        self.reason = reason


def load_audioset(source: str, split: str | None = None, config_name: str | None = None):
    """A `datasets` AudioSet build: a `save_to_disk` folder, a parquet folder/file, or a Hub id.

    The audio column is cast to `Audio(decode=False)` so that no torchcodec decoding is attempted.
    """
    import datasets

    if os.path.isdir(source) and (
        os.path.isfile(os.path.join(source, "dataset_dict.json")) or os.path.isfile(os.path.join(source, "state.json"))
    ):
        data = datasets.load_from_disk(source)
        data = data[split] if split is not None and isinstance(data, datasets.DatasetDict) else data
    elif source.endswith(".parquet"):
        data = datasets.load_dataset("parquet", data_files=source, split=split or "train")
    else:
        data = datasets.load_dataset(source, config_name, split=split)
    return _undecoded(data)


def _undecoded(data):
    import datasets

    def cast(ds):
        audio = ds.features.get("audio")
        if isinstance(audio, datasets.Audio) and audio.decode:
            return ds.cast_column("audio", datasets.Audio(decode=False))
        return ds

    return datasets.DatasetDict({k: cast(v) for k, v in data.items()}) if isinstance(data, dict) else cast(data)


def decode_audio(audio: dict | None, sampling_rate: int, clip_id: str = "?", min_samples: int = 1) -> np.ndarray:
    """{bytes, path} -> mono float32 waveform at `sampling_rate`; `BadAudioError` naming the clip otherwise.

    A clip with fewer than `min_samples` samples after resampling is bad too: a front-end needs one full analysis
    window (`LogMelFrontend.min_samples`), and a clip without frames would poison a batch's loss with NaN.
    """
    if audio is None:  # a Hub build lists a clip whose file is missing
        raise BadAudioError(clip_id, "no audio (the row's audio is None)")
    source = io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio.get("path")
    if not source:
        raise BadAudioError(clip_id, "no audio bytes and no path")
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        # libsndfile's own message: str(err) would name the in-memory file object by its address.
        raise BadAudioError(clip_id, f"unreadable audio ({getattr(err, 'error_string', err)})") from err
    if samples.size == 0:
        raise BadAudioError(clip_id, "empty audio")
    if not np.isfinite(samples).all():
        raise BadAudioError(clip_id, "audio contains NaN or inf")
    mono = samples.mean(axis=1)
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate).astype(np.float32)
    if len(mono) < min_samples:
        raise BadAudioError(
            clip_id,
            f"too short: {len(mono)} sample(s) at {sampling_rate} Hz ({samples.shape[0]} at {rate} Hz in the file), "
            f"the front-end needs at least {min_samples}",
        )
    return mono


class LabelEncoder:
    """AudioSet mids -> multi-hot vectors over the model's classes, in its output order."""

    def __init__(self, label_mids: Sequence[str]):
        self.label_mids = list(label_mids)
        self.index = {mid: i for i, mid in enumerate(self.label_mids)}

    def __call__(self, mids: Sequence[str], clip_id: str = "?") -> np.ndarray:
        unknown = [mid for mid in mids if mid not in self.index]
        if unknown:
            raise ValueError(f"clip {clip_id}: labels {unknown} are not among the model's {len(self.index)} classes.")
        target = np.zeros(len(self.label_mids), dtype=np.float32)
        target[[self.index[mid] for mid in mids]] = 1.0
        return target


@dataclass
class AudioSetCollator:
    """Decode, crop/pad and label a list of AudioSet rows.

    A bad clip becomes a silent placeholder row with `valid` False (and is listed in `skipped` as a (clip id,
    reason) pair) rather than being dropped: batches keep their size, so processes under DDP stay in step.
    Training crops a random `max_length_s` window from longer clips (a generator per DataLoader worker).
    Evaluation keeps whole clips, padded to the longest of the batch (at least `max_length_s`): the model scores a
    clip longer than its window window by window (`modeling_spa.windowing`), as `spa-tag` and the pipeline do.
    Clips shorter than `min_samples` (the front-end's `min_samples`) are bad clips.
    """

    sampling_rate: int
    label_mids: Sequence[str]
    max_length_s: float
    train: bool = False
    seed: int = 0
    min_samples: int = 1

    def __post_init__(self):
        self.encode_labels = LabelEncoder(self.label_mids)
        self.max_samples = int(round(self.max_length_s * self.sampling_rate))
        self.rng, self._worker_seed = np.random.default_rng(self.seed), None

    def _reseed_in_worker(self) -> None:
        # Workers start with copies of one generator: give each its own, from the seed torch derives for it.
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.rng, self._worker_seed = np.random.default_rng([self.seed, info.seed]), info.seed

    def _crop(self, wave: np.ndarray) -> np.ndarray:
        if not self.train or len(wave) <= self.max_samples:
            return wave
        start = int(self.rng.integers(0, len(wave) - self.max_samples + 1))
        return wave[start : start + self.max_samples]

    def __call__(self, rows: list[dict]) -> dict:
        self._reseed_in_worker()
        targets = np.zeros((len(rows), len(self.label_mids)), dtype=np.float32)
        waves, ids, skipped = [], [], []
        for i, row in enumerate(rows):
            clip_id = str(row.get("video_id", "?"))
            ids.append(clip_id)
            targets[i] = self.encode_labels(row["labels"], clip_id)  # a label error is a data error: raise
            try:
                waves.append(self._crop(decode_audio(row["audio"], self.sampling_rate, clip_id, self.min_samples)))
            except BadAudioError as err:
                skipped.append((clip_id, err.reason))
                waves.append(None)
        length = max([self.max_samples, *(len(wave) for wave in waves if wave is not None)])
        values = np.zeros((len(rows), length), dtype=np.float32)
        mask = np.ones((len(rows), length), dtype=np.int64)  # placeholders: full-length silence
        for i, wave in enumerate(waves):
            if wave is not None:
                values[i, : len(wave)] = wave
                mask[i, len(wave) :] = 0
        valid = np.array([wave is not None for wave in waves], dtype=bool)
        return {
            "input_values": torch.from_numpy(values),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(targets),
            "valid": torch.from_numpy(valid),
            "clip_ids": ids,
            "skipped": skipped,
        }


def stand_in_rows(valid: torch.Tensor) -> torch.Tensor:
    """Index of the row each batch row trains on: itself when its clip is valid, else the first valid row (row 0 when
    none is; the loop then zeroes the loss).

    Selecting the valid rows would change the batch's shape and read the count back to the host; repeating a valid
    clip in place of a bad one keeps one shape for a compiled step and reads nothing. Bad clips are rare, so the
    repeated clip's extra weight in that one step is negligible.
    """
    rows = torch.arange(valid.shape[0], device=valid.device)
    return torch.where(valid, rows, valid.int().argmax())
