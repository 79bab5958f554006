"""Batching: decoding, cropping or padding and labelling a list of AudioSet rows, bad clips kept as masked
placeholders so that batches keep their shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .decoding import BadAudioError, RandomCrop, decode_audio
from .labels import LabelEncoder

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


def stand_in_rows(valid: torch.Tensor) -> torch.Tensor:
    """Index of the row each batch row trains on: itself when its clip is valid, else the first valid row (row 0 when
    none is; the loop then zeroes the loss).

    Selecting the valid rows would change the batch's shape and read the count back to the host; repeating a valid
    clip in place of a bad one keeps one shape for a compiled step and reads nothing. Bad clips are rare, so the
    repeated clip's extra weight in that one step is negligible.
    """
    rows = torch.arange(valid.shape[0], device=valid.device)
    return torch.where(valid, rows, valid.int().argmax())
