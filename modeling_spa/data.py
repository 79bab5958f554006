"""AudioSet-format data: loading a `datasets` build, decoding audio, multi-hot labels, batching.

Audio stays `Audio(decode=False)` ({bytes, path}) in the dataset and is decoded here with soundfile + soxr,
inside DataLoader workers (datasets 5 decodes only through torchcodec, which needs CUDA torch; DESIGN.md §5).
A clip that cannot be used (missing, unreadable, empty, too short, NaN/inf, truncated) is skipped and reported by
id; the training loop counts the skips in its epoch summary.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr
import torch

from .onnx_tagger import AudioFileError, open_audio, read_all, read_blocks, seek_frame


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
    return keep_audio_undecoded(data)


def keep_audio_undecoded(data):
    """A Dataset, IterableDataset or dict of them with its `audio` column cast to `Audio(decode=False)`."""
    import datasets

    def cast(ds):
        audio = (ds.features or {}).get("audio")  # a stream may not know its features: nothing decodes then
        if isinstance(audio, datasets.Audio) and audio.decode:
            return ds.cast_column("audio", datasets.Audio(decode=False))
        return ds

    return datasets.DatasetDict({k: cast(v) for k, v in data.items()}) if isinstance(data, dict) else cast(data)


@dataclass
class RandomCrop:
    """A window of `length` samples at a uniform random offset, for clips longer than that (training)."""

    length: int
    rng: np.random.Generator

    def start(self, num_samples: int) -> int | None:
        """The window's first sample in a clip of `num_samples`; None: the clip is not longer, keep it whole."""
        if num_samples <= self.length:
            return None
        return int(self.rng.integers(0, num_samples - self.length + 1))


def mix_to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 -> (frames,) float32, the channel mean.

    One channel is returned as a view (no copy). Channels are summed column by column: `samples.mean(axis=1)` over
    a short inner axis is a slow numpy reduction (5 ms for 10 s of 48 kHz stereo, as long as decoding it); the sum
    of two channels times 0.5 equals it exactly.
    """
    if samples.shape[1] == 1:
        return samples[:, 0]
    mono = samples[:, 0] + samples[:, 1]
    for channel in range(2, samples.shape[1]):
        mono += samples[:, channel]
    mono *= np.float32(1.0 / samples.shape[1])
    return mono


def _open(audio: dict | None, clip_id: str) -> soundfile.SoundFile:
    if audio is None:  # a Hub build lists a clip whose file is missing
        raise BadAudioError(clip_id, "no audio (the row's audio is None)")
    source = io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio.get("path")
    if not source:
        raise BadAudioError(clip_id, "no audio bytes and no path")
    try:
        return open_audio(source, clip_id)
    except AudioFileError as err:
        raise BadAudioError(clip_id, err.reason) from err


def _seek(handle: soundfile.SoundFile, clip_id: str, frame: int) -> None:
    try:
        seek_frame(handle, clip_id, frame)
    except AudioFileError as err:
        raise BadAudioError(clip_id, err.reason) from err


def _read(handle: soundfile.SoundFile, clip_id: str, frames: int | None = None) -> np.ndarray:
    """`frames` frames from the current position (None: all the rest), read forward as spa-tag reads files."""
    try:
        if frames is None:
            return read_all(handle, clip_id)
        return next(read_blocks(handle, clip_id, frames), np.zeros((0, handle.channels), dtype=np.float32))
    except AudioFileError as err:
        raise BadAudioError(clip_id, err.reason) from err


def decode_audio(
    audio: dict | None,
    sampling_rate: int,
    clip_id: str = "?",
    min_samples: int = 1,
    crop: RandomCrop | None = None,
) -> np.ndarray:
    """{bytes, path} -> mono float32 waveform at `sampling_rate`; `BadAudioError` naming the clip otherwise.

    A clip with fewer than `min_samples` samples after resampling is bad too: a front-end needs one full analysis
    window (`LogMelFrontend.min_samples`), and a clip without frames would poison a batch's loss with NaN.
    With `crop`, a clip longer than `crop.length` comes back as a window of that length at a random offset. A file
    already at `sampling_rate` (what the builders write) is then decoded from the offset for the window's frames
    only (FLAC seeks to the sample); another rate is decoded and resampled whole, then cut.
    """
    with _open(audio, clip_id) as handle:
        rate, frames = handle.samplerate, handle.frames
        start = crop.start(frames) if crop is not None and rate == sampling_rate else None
        if start is not None:
            _seek(handle, clip_id, start)
            samples = _read(handle, clip_id, crop.length)
            if len(samples) < crop.length:
                raise BadAudioError(clip_id, f"truncated: {len(samples)} of the {crop.length} frames from {start}")
        else:
            samples = _read(handle, clip_id)
    if samples.size == 0:  # NaN and inf are refused by the reader
        raise BadAudioError(clip_id, "empty audio")
    mono = mix_to_mono(samples)
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate).astype(np.float32, copy=False)
    if len(mono) < min_samples:
        raise BadAudioError(
            clip_id,
            f"too short: {len(mono)} sample(s) at {sampling_rate} Hz ({samples.shape[0]} at {rate} Hz in the file), "
            f"the front-end needs at least {min_samples}",
        )
    if start is None and crop is not None and (cut := crop.start(len(mono))) is not None:
        mono = mono[cut : cut + crop.length]
    return mono


class LabelEncoder:
    """AudioSet mids -> multi-hot vectors over the model's classes, in its output order.

    A mid that is not one of the classes is an error naming the clip, or, with `ignore_unknown`, left out (the
    caller reports it: `known` tells which mids count).
    """

    def __init__(self, label_mids: Sequence[str], ignore_unknown: bool = False):
        self.label_mids = list(label_mids)
        self.index = {mid: i for i, mid in enumerate(self.label_mids)}
        self.ignore_unknown = ignore_unknown

    def unknown(self, mids: Sequence[str]) -> list[str]:
        return [mid for mid in mids if mid not in self.index]

    def __call__(self, mids: Sequence[str], clip_id: str = "?") -> np.ndarray:
        unknown = self.unknown(mids)
        if unknown and not self.ignore_unknown:
            raise ValueError(
                f"clip {clip_id}: labels {unknown} are not among the model's {len(self.index)} classes. To leave such "
                "labels out of every clip (counted per label), pass --unknown_labels ignore (train.py, evaluate.py, "
                "listening_study.py select) or ignore_unknown_labels=True."
            )
        target = np.zeros(len(self.label_mids), dtype=np.float32)
        target[[self.index[mid] for mid in mids if mid in self.index]] = 1.0
        return target


# A row that only fills a batch (streamed evaluation evens out the processes' batches): silent, masked, not a clip.
PADDING_KEY = "_spa_padding"
PADDING_ROW = {"video_id": "", "audio": None, "labels": [], PADDING_KEY: True}


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, allocated in shared memory.

    A worker's batch reaches the main process through shared memory: a tensor allocated elsewhere is copied there
    when it is sent (for 32 clips of 10 s at 32 kHz, 41 MB of samples). torch's `default_collate` allocates its
    output in shared memory for the same reason, with the same call.
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).resize_(shape)


@dataclass
class AudioSetCollator:
    """Decode, crop/pad and label a list of AudioSet rows.

    A bad clip becomes a silent placeholder row with `valid` False (and is listed in `skipped` as a (clip id,
    reason) pair) rather than being dropped: batches keep their size, so processes under DDP stay in step.
    Training crops a random `max_length_s` window from longer clips (a generator per DataLoader worker; a clip
    stored at the model's rate is decoded for the window only). Evaluation keeps whole clips, padded to the longest
    of the batch (at least `max_length_s`): the model scores a clip longer than its window window by window
    (`modeling_spa.windowing`), as `spa-tag` and the pipeline do. Clips shorter than `min_samples` (the front-end's
    `min_samples`) are bad clips. `attention_mask` is bool (an eighth of int64's bytes, which cross from the workers
    to the main process); the model reads only its row sums. Labels outside `label_mids` are an error, or with
    `ignore_unknown_labels` left out and listed in `unknown_labels` as (clip id, mid) pairs.
    """

    sampling_rate: int
    label_mids: Sequence[str]
    max_length_s: float
    train: bool = False
    seed: int = 0
    min_samples: int = 1
    ignore_unknown_labels: bool = False

    def __post_init__(self):
        self.encode_labels = LabelEncoder(self.label_mids, self.ignore_unknown_labels)
        self.max_samples = int(round(self.max_length_s * self.sampling_rate))
        self.rng, self._worker_seed = np.random.default_rng(self.seed), None

    def _reseed_in_worker(self) -> None:
        # Workers start with copies of one generator: give each its own, from the seed torch derives for it.
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.rng, self._worker_seed = np.random.default_rng([self.seed, info.seed]), info.seed

    def __call__(self, rows: list[dict]) -> dict:
        self._reseed_in_worker()
        crop = RandomCrop(self.max_samples, self.rng) if self.train else None
        targets = np.zeros((len(rows), len(self.label_mids)), dtype=np.float32)
        waves, ids, skipped, unknown = [], [], [], []
        for i, row in enumerate(rows):
            clip_id = str(row.get("video_id", "?"))
            ids.append(clip_id)
            if row.get(PADDING_KEY):
                waves.append(None)
                continue
            targets[i] = self.encode_labels(row["labels"], clip_id)  # a label error is a data error: raise
            unknown += [(clip_id, mid) for mid in self.encode_labels.unknown(row["labels"])]
            try:
                waves.append(decode_audio(row["audio"], self.sampling_rate, clip_id, self.min_samples, crop))
            except BadAudioError as err:
                skipped.append((clip_id, err.reason))
                waves.append(None)
        length = max([self.max_samples, *(len(wave) for wave in waves if wave is not None)])
        values = _batch_tensor((len(rows), length), torch.float32)
        mask = _batch_tensor((len(rows), length), torch.bool)
        for i, wave in enumerate(waves):
            real = 0 if wave is None else len(wave)
            if wave is not None:
                values[i, :real] = torch.from_numpy(wave)
            values[i, real:] = 0.0
            mask[i, :real] = True
            mask[i, real:] = wave is None  # placeholders: full-length silence
        return {
            "input_values": values,
            "attention_mask": mask,
            "labels": torch.from_numpy(targets),
            "valid": torch.tensor([wave is not None for wave in waves], dtype=torch.bool),
            "clip_ids": ids,
            "skipped": skipped,
            **({"unknown_labels": unknown} if self.ignore_unknown_labels else {}),
        }


def default_num_workers(processes_per_node: int | None = None) -> int:
    """DataLoader workers per process: the cores this process may use, shared among the node's processes, minus one
    for the process itself, at most 8 (decoding scales with cores; beyond 8 the main process's feeding and the
    shared memory traffic dominate). 0 (decode in the main process) where a process has a single core.

    `processes_per_node` defaults to the launcher's LOCAL_WORLD_SIZE (torchrun, `accelerate launch`), else 1.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = processes_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, cores // max(processes, 1) - 1))


def stand_in_rows(valid: torch.Tensor) -> torch.Tensor:
    """Index of the row each batch row trains on: itself when its clip is valid, else the first valid row (row 0 when
    none is; the loop then zeroes the loss).

    Selecting the valid rows would change the batch's shape and read the count back to the host; repeating a valid
    clip in place of a bad one keeps one shape for a compiled step and reads nothing. Bad clips are rare, so the
    repeated clip's extra weight in that one step is negligible.
    """
    rows = torch.arange(valid.shape[0], device=valid.device)
    return torch.where(valid, rows, valid.int().argmax())
