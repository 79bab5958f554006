"""The front-end kinds: a front-end's settings (`SPAConfig.frontend`, a preset of `frontend.FRONTEND_PRESETS`) -> the
module that turns waveforms into what the backbone takes, on the model's device.

- `"logmel"` (settings without a "kind"): `frontend.LogMelFrontend`, the log-mel of the paper's backbones.
- `"waveform"`: `WaveformFrontend`, the raw waveform of the wav2vec2-style encoders, as `Wav2Vec2FeatureExtractor`.
- `"whisper"`: `WhisperFrontend`, Whisper's 30 s log-mel, as `WhisperFeatureExtractor`.
- `"stacked_fbank"`: `StackedFbankFrontend`, wav2vec2-BERT's normalised Kaldi fbank with frames stacked by two, as
  `SeamlessM4TFeatureExtractor` computes it, bit for bit.

Every kind maps `(input_values (B, samples), attention_mask (B, samples) or None)` to `(features, mask)`: features
(B, frames, size) or, for the waveform, (B, samples), and a bool mask of the same leading shape, True where the clip's
real audio is. The log-mel kinds reuse `LogMelFrontend` (its framing, windows, mel filters and logs), and every
kind computes in float32 (the stacked fbank partly in float64, as its extractor) with autocast off and without
autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontend import LogMelFrontend

# The waveform extractors' variance floor (transformers' `zero_mean_unit_var_norm`).
NORM_EPS = 1e-7
# Whisper's log-mel: clamped to (the clip's maximum - 8), then (x + 4) / 4 (openai/whisper audio.py).
WHISPER_DYNAMIC_RANGE = 8.0
WHISPER_OFFSET = 4.0
WHISPER_SCALE = 4.0


def lengths_of(input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Each row's real samples (B,): the mask's count (right padding), or the full width without a mask."""
    if attention_mask is None:
        return torch.full((input_values.shape[0],), input_values.shape[-1], device=input_values.device)
    return attention_mask.to(input_values.device).long().sum(dim=-1)


def normalize_per_clip(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-7) per row over its real positions (`mask`, broadcast over trailing dims), as
    `Wav2Vec2FeatureExtractor` normalises a waveform; padding becomes 0.

    The statistics are taken in float64: the extractors' numpy sums are pairwise and exact to float32 rounding, which
    a float32 running sum over minutes of audio is not."""
    weights = mask.to(torch.float64)
    while weights.dim() < values.dim():
        weights = weights.unsqueeze(-1)
    x = values.double()
    count = weights.sum(dim=1, keepdim=True)
    mean = (x * weights).sum(dim=1, keepdim=True) / count
    squares = ((x - mean).square() * weights).sum(dim=1, keepdim=True)
    var = squares / count
    normed = (x - mean) / torch.sqrt(var + NORM_EPS)
    return torch.where(weights > 0, normed, 0.0).to(values.dtype)


# numpy's float32 sums: blocks of at most this many values, each summed in 8 interleaved accumulators.
NUMPY_BLOCK = 128


def numpy_float32_sum(x: torch.Tensor) -> torch.Tensor:
    """The float32 sum over dim 1 of `x` (B, n, ...) in the order numpy's `add.reduce` takes over a contiguous axis:
    halves split at a multiple of 8 down to blocks of at most 128 values, each summed in 8 interleaved accumulators
    that are then added as a tree, the block's last n % 8 values added one by one. It is `np.sum` bit for bit (tested),
    which a torch sum (another order) is not: an ulp of a band's mean, divided by a band's small spread, is enough to
    move wav2vec2-BERT's normalised features visibly."""
    n = x.shape[1]
    if n > NUMPY_BLOCK:
        half = n // 2 - (n // 2) % 8
        return numpy_float32_sum(x[:, :half]) + numpy_float32_sum(x[:, half:])
    if n < 8:
        total = torch.zeros_like(x[:, 0])
        for i in range(n):
            total = total + x[:, i]
        return total
    lanes, whole = x[:, :8], n - n % 8
    for start in range(8, whole, 8):
        lanes = lanes + x[:, start : start + 8]
    lane = lanes.unbind(dim=1)
    total = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))
    for i in range(whole, n):
        total = total + x[:, i]
    return total


def normalize_like_numpy(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`SeamlessM4TFeatureExtractor`'s per-bin normalisation of float32 (B, frames, bins) over each clip's real
    frames (a prefix, `mask`), rounded as its numpy computes it: float32 sums (`numpy_float32_sum`), each divided by
    the count in float64 (numpy divides by an integer scalar so) and rounded back, the unbiased variance, and
    (x - mean) / sqrt(var + 1e-7) in float32, correctly rounded. Padding becomes 0. Clips of one length go together."""
    lengths = mask.long().sum(dim=1)
    out = torch.zeros_like(values)
    for length in lengths.unique().tolist():
        rows = lengths == length
        x = values[rows, :length]
        mean = (numpy_float32_sum(x).double() / length).float()[:, None]
        centred = x - mean
        var = (numpy_float32_sum(centred * centred).double() / (length - 1)).float()[:, None]
        # The root in float64, rounded: torch's float32 sqrt on CPU is not correctly rounded, numpy's is.
        out[rows, :length] = centred / torch.sqrt((var + NORM_EPS).double()).float()
    return out


class WaveformFrontend(nn.Module):
    """The waveform as wav2vec2-style encoders take it (`Wav2Vec2FeatureExtractor`): with `do_normalize`, zero mean and
    unit variance per clip over its real samples; padding samples are 0. Returns (values (B, samples), sample mask).

    Normalisation uses the real samples even where a checkpoint's extractor returns no attention mask (its padded
    batch is normalised over the padding too): a clip then gets the values it gets alone.
    """

    def __init__(self, *, sampling_rate: int = 16000, do_normalize: bool = True, min_samples: int = 400):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.do_normalize = do_normalize
        self.min_samples = min_samples  # the CNN's receptive field: shorter clips give no frame

    @torch.no_grad()
    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be (batch, samples), got shape {tuple(input_values.shape)}")
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            values = input_values.float()
            positions = torch.arange(values.shape[-1], device=values.device)
            mask = positions < lengths_of(values, attention_mask)[:, None]
            if self.do_normalize:
                return normalize_per_clip(values, mask), mask
            return torch.where(mask, values, 0.0), mask

    def extra_repr(self) -> str:
        return f"sampling_rate={self.sampling_rate}, do_normalize={self.do_normalize}"


class WhisperFrontend(nn.Module):
    """Whisper's log-mel (`WhisperFeatureExtractor`): each clip zero-padded or cropped to `max_samples` (30 s), the
    centred log10 mel of `LogMelFrontend` over it, the last frame dropped, clamped to the clip's maximum - 8, then
    (x + 4) / 4. Returns (features (B, max_frames, n_mels), frame mask).

    The mask marks the frames whose centre lies in the clip (frame t for t * hop < samples), the frames the
    extractor's own attention mask marks; the encoder takes no mask, the pooling does.
    """

    def __init__(
        self,
        *,
        sampling_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 400,
        hop_length: int = 160,
        max_samples: int = 480000,
        max_frames: int = 3000,
    ):
        super().__init__()
        if max_samples // hop_length != max_frames:
            raise ValueError(f"{max_samples} samples make {max_samples // hop_length} frames, not {max_frames}")
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.max_samples = max_samples
        self.max_frames = max_frames
        self.n_mels = n_mels
        self.min_samples = 1
        # Periodic Hann over the whole FFT with torch.hann_window's float32 values, as the extractor's torch path has
        # them; Slaney mel 0 - 8 kHz with Slaney norm, power, log10 of the mel energies floored at 1e-10, no
        # normalisation here (the clamp comes first).
        self.log_mel = LogMelFrontend(
            sampling_rate=sampling_rate, n_mels=n_mels, win_length=n_fft, hop_length=hop_length, n_fft=n_fft,
            f_min=0.0, f_max=8000.0, window="hann_torch", periodic_window=True, mel_scale="slaney", mel_norm="slaney",
            log="log10", mel_floor=1e-10, center=True,
        )  # fmt: skip

    @torch.no_grad()
    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be (batch, samples), got shape {tuple(input_values.shape)}")
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            values = input_values.float()[:, : self.max_samples]
            lengths = lengths_of(values, attention_mask).clamp(max=values.shape[-1])
            # The extractor pads with zeros, not with whatever the batch holds beyond a clip.
            values = torch.where(torch.arange(values.shape[-1], device=values.device) < lengths[:, None], values, 0.0)
            values = nn.functional.pad(values, (0, self.max_samples - values.shape[-1]))
            log_spec, _ = self.log_mel(values)  # no mask: the zero padding is part of Whisper's input
            log_spec = log_spec[:, : self.max_frames]
            floor = log_spec.amax(dim=(1, 2), keepdim=True) - WHISPER_DYNAMIC_RANGE
            features = (torch.maximum(log_spec, floor) + WHISPER_OFFSET) / WHISPER_SCALE
            frames = torch.arange(self.max_frames, device=values.device)
            return features, frames * self.hop_length < lengths[:, None]

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, max_samples={self.max_samples}"


class StackedFbankFrontend(nn.Module):
    """wav2vec2-BERT's features (`SeamlessM4TFeatureExtractor`): the Kaldi fbank of `LogMelFrontend` (settings of the
    `w2v_bert` preset) of the waveform scaled by `waveform_scale` (2^15, Kaldi's 16-bit range), each mel bin normalised
    per clip over its real frames (unbiased variance), padded to a multiple of `stride` frames and stacked: (B,
    frames // stride, n_mels * stride). A stacked frame is real where its second frame is, as the extractor marks it.
    Every step rounds where the extractor's numpy does, so on CPU the features are the extractor's bit for bit.
    """

    def __init__(self, *, stride: int = 2, waveform_scale: float = 2.0**15, **fbank):
        super().__init__()
        self.stride = stride
        self.waveform_scale = waveform_scale
        self.fbank = LogMelFrontend(**fbank)
        self.sampling_rate = self.fbank.sampling_rate
        # `stride` frames: with fewer, the extractor's stacked frame holds padding and is masked out.
        self.min_samples = self.fbank.win_length + (stride - 1) * self.fbank.hop_length

    @torch.no_grad()
    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            fbank, mask = self.fbank(input_values.to(self.fbank.compute_dtype) * self.waveform_scale, attention_mask)
            fbank = normalize_like_numpy(fbank.float(), mask)
            extra = -fbank.shape[1] % self.stride
            fbank = nn.functional.pad(fbank, (0, 0, 0, extra))
            mask = nn.functional.pad(mask, (0, extra), value=False)
            batch, frames, bins = fbank.shape
            stacked = fbank.reshape(batch, frames // self.stride, bins * self.stride)
            return stacked, mask[:, 1 :: self.stride]  # the extractor's `indices % stride == 1`

    def extra_repr(self) -> str:
        return f"stride={self.stride}, waveform_scale={self.waveform_scale}"


FRONTEND_KINDS: dict[str, type[nn.Module]] = {
    "logmel": LogMelFrontend,
    "waveform": WaveformFrontend,
    "whisper": WhisperFrontend,
    "stacked_fbank": StackedFbankFrontend,
}


def frontend_kind(settings: dict) -> str:
    """The kind of a front-end's settings ("logmel" for the presets of the paper's backbones, which name none)."""
    kind = settings.get("kind", "logmel")
    if kind not in FRONTEND_KINDS:
        raise ValueError(f"Unknown front-end kind {kind!r}; known kinds: {', '.join(FRONTEND_KINDS)}")
    return kind


def build_frontend(settings: dict) -> nn.Module:
    """The front-end module of `settings` (a preset, as stored in `SPAConfig.frontend`)."""
    arguments = {key: value for key, value in settings.items() if key != "kind"}
    return FRONTEND_KINDS[frontend_kind(settings)](**arguments)


def feature_size(settings: dict) -> int | None:
    """The size of one frame of features the front-end makes (None for the waveform, which has no frames)."""
    kind = frontend_kind(settings)
    if kind == "waveform":
        return None
    return settings["n_mels"] * settings.get("stride", 1)


def describe_frontend(settings: dict) -> str:
    """One line for model cards: the rate and what the features are."""
    kind, rate = frontend_kind(settings), settings["sampling_rate"]
    if kind == "waveform":
        return f"{rate} Hz raw waveform" + (", normalised per clip" if settings.get("do_normalize") else "")
    if kind == "whisper":
        return f"{rate} Hz, Whisper log-mel, {settings['n_mels']} mel, {settings['max_samples'] / rate:g} s"
    if kind == "stacked_fbank":
        return f"{rate} Hz, Kaldi fbank {settings['n_mels']} mel, frames stacked by {settings['stride']}"
    return f"{rate} Hz, {settings['n_mels']} mel, window {settings['win_length']}, hop {settings['hop_length']}"


__all__ = [
    "FRONTEND_KINDS",
    "StackedFbankFrontend",
    "WaveformFrontend",
    "WhisperFrontend",
    "build_frontend",
    "describe_frontend",
    "feature_size",
    "frontend_kind",
]
