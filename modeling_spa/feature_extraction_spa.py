"""Feature extractor for SPA models: resample, mix to mono, pad/crop. The log-mel is computed inside the model.

`transformers.ASTFeatureExtractor` computes Kaldi fbanks per clip in numpy on the CPU; SPA models compute them
batched on their own device (`modeling_spa.frontend`). This extractor therefore only prepares waveforms:
`input_values` (B, samples) float32 at the model's rate and a sample-level `attention_mask` (B, samples).
"""

from __future__ import annotations

import numpy as np
import soxr
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, is_torch_tensor, logging

logger = logging.get_logger(__name__)

# A 2-D clip is (channels, samples) or (samples, channels): its smaller axis is the channel axis, and must have
# at most this many entries. More would be a batch of equal-length clips, which must be passed as a list.
MAX_CHANNELS = 8


def _to_numpy(clip) -> np.ndarray:
    if is_torch_tensor(clip):
        clip = clip.detach().cpu()
        # numpy has no bfloat16; float32 holds every half-precision value exactly.
        return clip.float().numpy() if clip.is_floating_point() else clip.numpy()
    return np.asarray(clip)


def _split_clips(raw_speech) -> list[np.ndarray]:
    """The clips of `raw_speech`: a list of 1-D (mono) or 2-D (multi-channel) arrays."""
    if isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("raw_speech is empty: pass one clip or a non-empty list of clips")
        first = raw_speech[0]
        if isinstance(first, (int, float, np.number)):
            # A plain list of samples is one mono clip.
            return [np.asarray(raw_speech)]
        return [_to_numpy(clip) for clip in raw_speech]
    array = _to_numpy(raw_speech)
    if array.ndim in (1, 2):
        return [array]
    if array.ndim == 3:
        return list(array)
    raise ValueError(
        f"raw_speech must be a clip (samples,) or (channels, samples) / (samples, channels), a list of clips, "
        f"or a (batch, channels, samples) array; got shape {array.shape}"
    )


def _to_mono_float(clip: np.ndarray, index: int) -> np.ndarray:
    """float32 mono waveform of one clip; integer PCM is scaled to [-1, 1)."""
    if clip.dtype == np.bool_ or not (np.issubdtype(clip.dtype, np.floating) or np.issubdtype(clip.dtype, np.integer)):
        raise ValueError(f"Clip {index} has dtype {clip.dtype}; expected floating point or integer PCM samples")
    if np.issubdtype(clip.dtype, np.integer):
        info = np.iinfo(clip.dtype)
        clip = (clip.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
    if clip.ndim == 2:
        channel_axis = int(np.argmin(clip.shape))
        if clip.shape[channel_axis] > MAX_CHANNELS:
            raise ValueError(
                f"Clip {index} has shape {clip.shape}: a 2-D clip is (channels, samples) or (samples, channels) "
                f"with at most {MAX_CHANNELS} channels; pass a batch as a list of clips"
            )
        clip = clip.mean(axis=channel_axis)
    elif clip.ndim != 1:
        raise ValueError(f"Clip {index} has shape {clip.shape}; expected (samples,) or a 2-D multi-channel clip")
    if clip.size == 0:
        raise ValueError(f"Clip {index} is empty")
    clip = np.ascontiguousarray(clip, dtype=np.float32)
    if not np.isfinite(clip).all():
        raise ValueError(f"Clip {index} contains NaN or infinite samples")
    return clip


class SPAFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Constructs an SPA feature extractor: waveforms in, padded mono waveforms out.

    Any input rate is resampled to `sampling_rate` with soxr (quality "HQ"), multi-channel clips are averaged to
    mono, and clips are cropped (from the start) and right-padded to `max_length_s` seconds or to the longest clip.
    No spectrogram is computed: the model's front-end does it on its own device.

    Accepted inputs: one clip as a 1-D array / tensor / list of floats, or as a 2-D multi-channel array whose smaller
    axis (at most 8 entries) is the channel axis, either (channels, samples) or (samples, channels); a batch as a
    list of such clips, or a (batch, channels, samples) array. A 2-D array is never read as a batch: stack mono
    clips into a list. Integer PCM is scaled to [-1, 1).

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
        truncation: bool = True,
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
                `"max_length"`: pad to `max_length` samples or `max_length_s` seconds (to the longest clip when
                neither is set); `"longest"` or `True`: pad to the longest clip of the batch; `"do_not_pad"` or
                `False`: return a list of unpadded clips.
            max_length (`int`, *optional*):
                Length in samples, overriding `max_length_s`.
            truncation (`bool`, *optional*, defaults to `True`):
                Crop clips longer than the maximum length (keeping their start).
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

        clips = [_to_mono_float(clip, index) for index, clip in enumerate(_split_clips(raw_speech))]
        if sampling_rate != self.sampling_rate:
            clips = [soxr.resample(clip, sampling_rate, self.sampling_rate, quality="HQ") for clip in clips]

        target = self._target_length(max_length)
        if truncation and target is not None:
            clips = [clip[:target] for clip in clips]
        strategy = self._padding_strategy(padding)
        if strategy == PaddingStrategy.DO_NOT_PAD:
            return self._unpadded(clips, return_tensors, return_attention_mask)
        length = target if strategy == PaddingStrategy.MAX_LENGTH and target is not None else 0
        length = max([length, *(len(clip) for clip in clips)])

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
