"""Feature extractor for SPA models: resample, mix to mono, pad. The log-mel is computed inside the model.

`transformers.ASTFeatureExtractor` computes Kaldi fbanks per clip in numpy on the CPU; SPA models compute them
batched on their own device (`modeling_spa.frontend`). This extractor therefore only prepares waveforms:
`input_values` (B, samples) float32 at the model's rate and a sample-level `attention_mask` (B, samples).
"""

from __future__ import annotations

import numpy as np
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, is_torch_tensor, logging

from .waveforms import mix_to_mono, resample

logger = logging.get_logger(__name__)

# A 2-D list element is one multi-channel clip, (channels, samples) or (samples, channels): its smaller axis is the
# channel axis and must have at most this many entries.
MAX_CHANNELS = 8
# Integer dtypes read as PCM and scaled to [-1, 1): those of audio files (8-bit WAV is unsigned). Other integer
# dtypes are no PCM format; int64 is what np.array([1, 2]) gives, and scaling it by 2**63 would give silence.
PCM_DTYPES = (np.uint8, np.int8, np.int16, np.int32)


def _to_numpy(clip) -> np.ndarray:
    if is_torch_tensor(clip):
        clip = clip.detach().cpu()
        # numpy has no bfloat16; float32 holds every half-precision value exactly.
        return clip.float().numpy() if clip.is_floating_point() else clip.numpy()
    if isinstance(clip, (list, tuple)):
        # Python numbers are sample values, never PCM: [0, 1, -1] must not become int64 PCM, i.e. silence.
        return np.asarray(clip, dtype=np.float32)
    return np.asarray(clip)


def _split_clips(raw_speech) -> list[np.ndarray]:
    """The clips of `raw_speech`: 1-D (mono) arrays, and 2-D (multi-channel) arrays for 2-D list elements."""
    if isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("raw_speech is empty: pass one clip or a non-empty list of clips")
        if isinstance(raw_speech[0], (int, float, np.number)):
            return [_to_numpy(raw_speech)]  # a plain list of samples is one mono clip
        return [_to_numpy(clip) for clip in raw_speech]
    array = _to_numpy(raw_speech)
    if array.ndim == 1:
        return [array]
    if array.ndim == 2:
        if array.shape[1] <= MAX_CHANNELS < array.shape[0]:
            # Many clips of a few samples, which no front-end can use: soundfile's (samples, channels) of one clip.
            raise ValueError(
                f"raw_speech of shape {array.shape} would be {array.shape[0]} clips of {array.shape[1]} samples: a 2-D "
                f"array is a batch (batch, samples). Pass one multi-channel clip as a list element, [clip]."
            )
        return list(array)  # (batch, samples): mono clips, as in every transformers audio extractor
    raise ValueError(
        f"raw_speech must be a clip (samples,), a batch (batch, samples) or a list of clips; got an array of shape "
        f"{array.shape}. Pass multi-channel clips as a list of (channels, samples) arrays."
    )


def _to_mono_float(clip: np.ndarray, index: int) -> np.ndarray:
    """float32 mono waveform of one clip; integer PCM is scaled to [-1, 1)."""
    if np.issubdtype(clip.dtype, np.integer) and clip.dtype not in PCM_DTYPES:
        raise ValueError(
            f"Clip {index} has dtype {clip.dtype}, which is no PCM format: pass float samples, or int16/int32 PCM"
        )
    if clip.dtype == np.bool_ or not (np.issubdtype(clip.dtype, np.floating) or np.issubdtype(clip.dtype, np.integer)):
        raise ValueError(f"Clip {index} has dtype {clip.dtype}; expected floating point or integer PCM samples")
    if np.issubdtype(clip.dtype, np.integer):
        info = np.iinfo(clip.dtype)
        clip = (clip.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
    if clip.ndim == 2:
        channel_axis = int(np.argmin(clip.shape))  # a tie (a clip of at most MAX_CHANNELS samples): axis 0
        if clip.shape[channel_axis] > MAX_CHANNELS:
            raise ValueError(
                f"Clip {index} has shape {clip.shape}: a 2-D clip is (channels, samples) or (samples, channels) "
                f"with at most {MAX_CHANNELS} channels; pass a batch of mono clips as a 2-D array or a list of clips"
            )
        clip = mix_to_mono(clip, channel_axis)
    elif clip.ndim != 1:
        raise ValueError(f"Clip {index} has shape {clip.shape}; expected (samples,) or a 2-D multi-channel clip")
    if clip.size == 0:
        raise ValueError(f"Clip {index} is empty")
    clip = np.ascontiguousarray(clip, dtype=np.float32)
    if not np.isfinite(clip).all():
        raise ValueError(f"Clip {index} contains NaN or infinite samples")
    return clip


def _round_up(length: int, multiple: int | None) -> int:
    return length if multiple is None else -(-length // multiple) * multiple


class SPAFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Constructs an SPA feature extractor: waveforms in, padded mono waveforms out.

    Any input rate is resampled to `sampling_rate` with soxr (quality "HQ"), multi-channel clips are averaged to
    mono, and clips are right-padded to `max_length_s` seconds or to the longest clip. Clips are not cut by default
    (`truncation=False`): an SPA model scores a clip longer than its window window by window at inference, so the
    audio-classification pipeline, which calls the extractor with its defaults, sees the whole clip and gives the
    scores `spa-tag` gives. Pass `truncation=True` to crop to `max_length_s` (from the start), as for training.
    No spectrogram is computed: the model's front-end does it on its own device.

    Accepted inputs, as in transformers' audio extractors:
    - one mono clip: a 1-D numpy array or torch tensor, or a list of numbers;
    - a batch of mono clips: a 2-D array or tensor `(batch, samples)`, or a list of 1-D clips of any lengths;
    - multi-channel clips: only as list elements. A 2-D element is one clip, `(channels, samples)` or
      `(samples, channels)` (as soundfile returns it): its smaller axis, with at most 8 entries, is the channel
      axis (on a tie, which only a clip of at most 8 samples can have, the first), and the channels are averaged.
      One stereo clip is `[stereo]`. Arrays of 3 or more dimensions are rejected, and so is a 2-D array of more than
      8 rows of at most 8 samples (soundfile's `(samples, channels)` of one clip passed without the list).

    Sample values: floating point arrays are taken as they are, and a list of Python numbers is float samples
    (`[0, 1, -1]` is not PCM). Integer arrays and tensors of a PCM dtype (uint8, int8, int16, int32) are scaled to
    [-1, 1); other integer dtypes (int64, as `np.array([1, 2])` gives) are rejected.

    Args:
        sampling_rate (`int`, *optional*, defaults to 32000):
            The model's sampling rate, in Hz.
        max_length_s (`float`, *optional*, defaults to 10.0):
            Clip length in seconds for `padding="max_length"` and truncation; `None` pads to the longest clip.
        padding_value (`float`, *optional*, defaults to 0.0):
            The sample value used for padding.
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Whether to return the sample-level `attention_mask` (1 for real samples, 0 for padding).
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        sampling_rate: int = 32000,
        max_length_s: float | None = 10.0,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        # feature_size is fixed (mono waveforms) but comes back from preprocessor_config.json.
        kwargs.pop("feature_size", None)
        super().__init__(
            feature_size=1,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if self.padding_side != "right":
            raise ValueError("SPAFeatureExtractor pads on the right: the model's frame mask assumes it")
        if max_length_s is not None and max_length_s <= 0:
            raise ValueError(f"max_length_s must be positive or None, got {max_length_s}")
        self.max_length_s = max_length_s

    @classmethod
    def for_model(cls, config) -> SPAFeatureExtractor:
        """The extractor an `SPAConfig` implies, for a checkpoint saved without one (`model.save_pretrained` alone):
        the front-end's rate, clips padded to the model's window (what `spa-convert` saves beside a model)."""
        from .windowing import window_settings

        rate = config.frontend["sampling_rate"]
        return cls(sampling_rate=rate, max_length_s=window_settings(config).length / rate)

    def _target_length(self, max_length: int | None) -> int | None:
        if max_length is not None:
            return max_length
        if self.max_length_s is None:
            return None
        return round(self.max_length_s * self.sampling_rate)

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = "max_length",
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | TensorType | None = None,
        return_attention_mask: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Prepare one clip or a batch of clips for an SPA model.

        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]` or a list of arrays / tensors):
                The clip(s); see the class docstring for the accepted shapes.
            sampling_rate (`int`, *optional*):
                The rate of `raw_speech`. Any rate is resampled to `self.sampling_rate`; when it is not given, the
                input is assumed to be at the model's rate already.
            padding (`bool`, `str` or [`~utils.PaddingStrategy`], *optional*, defaults to `"max_length"`):
                `"max_length"`: pad to `max_length` samples or `max_length_s` seconds, or to the longest clip when
                that is longer or neither is set; `"longest"` or `True`: pad to the longest clip of the batch;
                `"do_not_pad"` or `False`: return a list of unpadded clips.
            max_length (`int`, *optional*):
                Length in samples, overriding `max_length_s`.
            truncation (`bool`, *optional*, defaults to `False`):
                Crop clips longer than the maximum length (keeping their start). Off by default: the model windows
                long clips at inference (see the class docstring).
            pad_to_multiple_of (`int`, *optional*):
                Round the padded length (and a truncation length) up to a multiple of this, as transformers'
                `SequenceFeatureExtractor.pad` does; no effect with `padding=False`.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` or `"np"`; by default torch inputs give torch tensors and others numpy arrays.
            return_attention_mask (`bool`, *optional*):
                Defaults to `self.return_attention_mask`.

        Returns:
            [`BatchFeature`] with `input_values` (batch, samples) float32 and `attention_mask` (batch, samples).
        """
        if sampling_rate is None:
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`. "
                f"Failing to do so can result in silent errors that might be hard to debug; assuming "
                f"{self.sampling_rate} Hz."
            )
            sampling_rate = self.sampling_rate
        if sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {sampling_rate}")
        if return_tensors is None and (
            is_torch_tensor(raw_speech)
            or (isinstance(raw_speech, (list, tuple)) and any(is_torch_tensor(clip) for clip in raw_speech))
        ):
            return_tensors = "pt"
        return_attention_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask

        if pad_to_multiple_of is not None and pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be a positive number of samples, got {pad_to_multiple_of}")

        clips = [_to_mono_float(clip, index) for index, clip in enumerate(_split_clips(raw_speech))]
        if sampling_rate != self.sampling_rate:
            clips = [resample(clip, sampling_rate, self.sampling_rate) for clip in clips]

        target = self._target_length(max_length)
        if truncation:
            if target is None:
                raise ValueError("truncation=True needs a length: pass max_length or set max_length_s")
            clips = [clip[: _round_up(target, pad_to_multiple_of)] for clip in clips]
        strategy = self._padding_strategy(padding)
        if strategy == PaddingStrategy.DO_NOT_PAD:
            return self._unpadded(clips, return_tensors, return_attention_mask)
        length = target if strategy == PaddingStrategy.MAX_LENGTH and target is not None else 0
        length = _round_up(max([length, *(len(clip) for clip in clips)]), pad_to_multiple_of)

        input_values = np.full((len(clips), length), self.padding_value, dtype=np.float32)
        attention_mask = np.zeros((len(clips), length), dtype=np.int32)
        for row, clip in enumerate(clips):
            input_values[row, : len(clip)] = clip
            attention_mask[row, : len(clip)] = 1
        data = {"input_values": input_values}
        if return_attention_mask:
            data["attention_mask"] = attention_mask
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _padding_strategy(padding: bool | str | PaddingStrategy) -> PaddingStrategy:
        if padding is True:
            return PaddingStrategy.LONGEST
        if padding is False:
            return PaddingStrategy.DO_NOT_PAD
        return PaddingStrategy(padding)

    @staticmethod
    def _unpadded(
        clips: list[np.ndarray], return_tensors: str | TensorType | None, return_attention_mask: bool
    ) -> BatchFeature:
        data = {"input_values": clips}
        if return_attention_mask:
            data["attention_mask"] = [np.ones(len(clip), dtype=np.int32) for clip in clips]
        if return_tensors is not None and len({len(clip) for clip in clips}) > 1:
            raise ValueError("Clips of different lengths cannot be returned as tensors without padding")
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["SPAFeatureExtractor"]
