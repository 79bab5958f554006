"""Waveform basics with numpy alone: the library's one mix-down to mono and one resampling setting.

Used by the feature extractor, the data loader, the dataset builders and the audio file reader; part of the model's
code (the extractor imports it) and copied beside an exported `tag_onnx.py` (`modeling_spa/data/audio_files.py`
imports it there), so it imports nothing but numpy, and soxr only to resample.
"""

from __future__ import annotations

import numpy as np

# soxr quality of every resampling path (extractor, training data, builds, streamed files): with one setting, a stream
# resampled block by block equals the one-shot result exactly (soxr 1.1).
RESAMPLE_QUALITY = "HQ"


def mix_to_mono(samples: np.ndarray, channel_axis: int = 1) -> np.ndarray:
    """The channels' mean as float32 mono: the library's one mix-down (extractor, data, builds, streamed files).

    `samples` is (frames, channels) with `channel_axis=1` (soundfile's layout) or (channels, frames) with 0; a 1-D
    array is mono already, and one channel comes back as a view. Channels are summed one by one and scaled, not
    `mean`ed: numpy's mean over a short inner axis is a slow reduction (5 ms for 10 s of 48 kHz stereo, as long as
    decoding it), and for two channels the two are equal exactly.
    """
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    channels = np.moveaxis(samples, channel_axis, 0)
    if len(channels) == 1:
        return channels[0].astype(np.float32, copy=False)
    mono = channels[0] + channels[1]
    for channel in channels[2:]:
        mono += channel
    mono *= mono.dtype.type(1.0 / len(channels))
    return mono.astype(np.float32, copy=False)


def resample(mono: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """float32 `mono` at `target_rate` (soxr at `RESAMPLE_QUALITY`, so every path gives the same samples)."""
    if rate == target_rate:
        return mono.astype(np.float32, copy=False)
    import soxr  # needed only to resample

    return soxr.resample(mono, rate, target_rate, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
