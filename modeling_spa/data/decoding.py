"""Decoding a dataset row's audio ({bytes, path}) into the model's input: mono, at its rate, cropped for training.

The audio is read by the package's one reader (`data.audio_files`), inside DataLoader workers. A clip that cannot be
used (missing, unreadable, empty, too short, NaN/inf, truncated) is skipped and reported by
id; the training loop counts the skips in its epoch summary.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile

from ..waveforms import mix_to_mono, resample
from .audio_files import AudioFileError, open_audio, read_all, read_blocks, seek_frame


class BadAudioError(ValueError):
    """A clip whose audio cannot be used; `clip_id` names it."""

    def __init__(self, clip_id: str, reason: str):
        super().__init__(f"clip {clip_id}: {reason}")
        self.clip_id = clip_id
        self.reason = reason


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
    mono = resample(mono, rate, sampling_rate)
    if len(mono) < min_samples:
        raise BadAudioError(
            clip_id,
            f"too short: {len(mono)} sample(s) at {sampling_rate} Hz ({samples.shape[0]} at {rate} Hz in the file), "
            f"the front-end needs at least {min_samples}",
        )
    if start is None and crop is not None and (cut := crop.start(len(mono))) is not None:
        mono = mono[cut : cut + crop.length]
    return mono
