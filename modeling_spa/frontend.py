"""In-model log-mel front-end: waveforms (B, samples) to normalised log-mel features (B, frames, n_mels) in torch.

The feature extractor only resamples and pads; the spectrogram is computed here so that it runs batched on the
model's device. Each backbone has a preset that reproduces the features its public checkpoint was trained on:

- `"ast"`: `transformers.ASTFeatureExtractor` (Kaldi fbank of the AST recipe), matched to ~1e-5 after normalisation.
- `"passt"`: PaSST's `AugmentMelSTFT` in eval mode (the SPA paper's default front-end).
- `"cnn14"`: PANNs' torchlibrosa `Spectrogram` + `LogmelFilterBank` (librosa mel filters, dB, no normalisation).
- `"htsat"`: `ClapFeatureExtractor` of `laion/clap-htsat-unfused` (48 kHz, librosa mel filters, dB).
- `"tiny"`: a small 16 kHz front-end for models trained from scratch.
- `"waveform"`, `"whisper"`, `"whisper_128"`, `"w2v_bert"`: the feature extractors of transformers' speech encoders
  (backbone `"hub"`), front-ends of other kinds (`modeling_spa.frontends`: raw waveform, Whisper's log-mel, the stacked
  Kaldi fbank of wav2vec2-BERT), which reuse this module's log-mel.

Normalisation convention: `output = (log_mel - normalize_mean) / normalize_std`. AST divides by twice its dataset
standard deviation, so its preset stores `normalize_std = 2 * 4.5689974`; PaSST's `(x + 4.5) / 5` is mean -4.5,
std 5. Frames beyond a clip's real audio (from the sample attention mask) and frames added to reach `max_frames`
hold `frame_padding_value` (in the log domain, before normalisation), as AST pads its fbank with 0.

Framing follows the reference of each preset:
- `center=False`: Kaldi framing (snip_edges): frame t covers samples [t * hop, t * hop + win_length); frames that
  would run past the end are dropped, so a clip of S samples has 1 + (S - win_length) // hop frames.
- `center=True`: torch.stft / librosa framing: the signal is reflect-padded by n_fft // 2 on both sides, the window
  is centred in an n_fft buffer, and a clip of S samples has 1 + S // hop frames.
Pre-emphasis is applied per frame after DC removal (`preemphasis_per_frame=True`, Kaldi) or to the whole signal
before framing, which drops one sample (PaSST's `conv1d` with kernel [-c, 1]).
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch
from torch import nn
from transformers.audio_utils import mel_filter_bank, window_function

# float32 machine epsilon: Kaldi's (and AST's) floor for mel energies before the log.
KALDI_MEL_FLOOR = 1.1920928955078125e-07
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)

FRONTEND_PRESETS: dict[str, dict] = {
    # PaSST AugmentMelSTFT (kkoutini/PaSST models/preprocess.py, hear21passt base.py), eval mode: signal-level
    # pre-emphasis, symmetric Hann 800 in a 1024 FFT, centred STFT, Kaldi mel banks from 0 Hz to
    # sr // 2 - fmax_aug_range // 2 = 15 kHz, log(mel + 1e-5), then (x + 4.5) / 5. 10 s at 32 kHz -> 1000 frames,
    # which the released models (img_size 998, patch 16, stride 10) cut into the same 99 time patches as 998.
    "passt": {
        "sampling_rate": 32000,
        "n_mels": 128,
        "win_length": 800,
        "hop_length": 320,
        "n_fft": 1024,
        "f_min": 0.0,
        "f_max": 15000.0,
        "window": "hann",
        "periodic_window": False,
        "mel_scale": "kaldi",
        "mel_norm": None,
        "log": "natural",
        "log_offset": 1e-5,
        "mel_floor": 0.0,
        "preemphasis": 0.97,
        "preemphasis_per_frame": False,
        "remove_dc_offset": False,
        "center": True,
        "normalize_mean": -4.5,
        "normalize_std": 5.0,
        "frame_padding_value": math.log(1e-5),
        "max_frames": 1000,
    },
    # transformers.ASTFeatureExtractor without torchaudio (its numpy path, identical to the torchaudio Kaldi fbank
    # it replaces): 25 ms symmetric Hann ("hanning" in Kaldi, not its default povey), 10 ms hop, FFT 512,
    # per-frame DC removal then pre-emphasis 0.97, Kaldi mel banks 20 Hz - 8 kHz, natural log of power floored
    # at float32 eps, fbank padded with 0 / cropped to 1024 frames, then (x - mean) / (2 * std).
    "ast": {
        "sampling_rate": 16000,
        "n_mels": 128,
        "win_length": 400,
        "hop_length": 160,
        "n_fft": 512,
        "f_min": 20.0,
        "f_max": 8000.0,
        "window": "hann",
        "periodic_window": False,
        "mel_scale": "kaldi",
        "mel_norm": None,
        "log": "natural",
        "log_offset": 0.0,
        "mel_floor": KALDI_MEL_FLOOR,
        "preemphasis": 0.97,
        "preemphasis_per_frame": True,
        "remove_dc_offset": True,
        "center": False,
        "normalize_mean": -4.2677393,
        "normalize_std": 2 * 4.5689974,
        "frame_padding_value": 0.0,
        "max_frames": 1024,
    },
    # PANNs CNN14 (qiuqiangkong/audioset_tagging_cnn): torchlibrosa Spectrogram (periodic Hann 1024, hop 320,
    # centred, reflect) + LogmelFilterBank (librosa slaney mel filters 50 Hz - 14 kHz, 10 * log10(max(x, 1e-10)),
    # ref 1, no top_db). CNN14 normalises with its own BatchNorm (bn0), so no normalisation here.
    "cnn14": {
        "sampling_rate": 32000,
        "n_mels": 64,
        "win_length": 1024,
        "hop_length": 320,
        "n_fft": 1024,
        "f_min": 50.0,
        "f_max": 14000.0,
        "window": "hann",
        "periodic_window": True,
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "log": "db",
        "log_offset": 0.0,
        "mel_floor": 1e-10,
        "preemphasis": 0.0,
        "preemphasis_per_frame": False,
        "remove_dc_offset": False,
        "center": True,
        "normalize_mean": 0.0,
        "normalize_std": 1.0,
        "frame_padding_value": -100.0,
        "max_frames": None,
    },
    # Small demo front-end for a CNN trained from scratch: 16 kHz, 25 ms / 10 ms, 64 HTK mel bands (no empty
    # band at this FFT size), PaSST's log(mel + 1e-5) and its (x + 4.5) / 5 scaling, which maps digital silence
    # to about -1.4 and loud clips to about +1.
    "tiny": {
        "sampling_rate": 16000,
        "n_mels": 64,
        "win_length": 400,
        "hop_length": 160,
        "n_fft": 512,
        "f_min": 50.0,
        "f_max": 8000.0,
        "window": "hann",
        "periodic_window": True,
        "mel_scale": "htk",
        "mel_norm": None,
        "log": "natural",
        "log_offset": 1e-5,
        "mel_floor": 0.0,
        "preemphasis": 0.0,
        "preemphasis_per_frame": False,
        "remove_dc_offset": False,
        "center": True,
        "normalize_mean": -4.5,
        "normalize_std": 5.0,
        "frame_padding_value": math.log(1e-5),
        "max_frames": None,  # the demo CNN takes clips of any length
    },
}


# HTS-AT as the audio tower of CLAP laion/clap-htsat-unfused: ClapFeatureExtractor with truncation "rand_trunc"
# is CNN14's recipe (librosa slaney filters, periodic Hann 1024, centred, power_to_db with min 1e-10, no top_db)
# at 48 kHz with hop 480: 10 s -> 1001 frames. HTS-AT normalises with its own BatchNorm.
FRONTEND_PRESETS["htsat"] = {**FRONTEND_PRESETS["cnn14"], "sampling_rate": 48000, "hop_length": 480, "max_frames": 1001}

# PSLA (YuanGongND/psla src/dataloaders/audioset_dataset.py): torchaudio's Kaldi fbank with the AST recipe's arguments
# of the waveform minus its mean (a no-op here: Kaldi removes each frame's DC offset before pre-emphasis, and padded
# frames are masked), zero-padded or cropped to 1056 frames, then (x + 4.6476) / 4.5699 (one std, not AST's two).
FRONTEND_PRESETS["psla"] = {
    **FRONTEND_PRESETS["ast"],
    "normalize_mean": -4.6476,
    "normalize_std": 4.5699,
    "max_frames": 1056,
}

# PaSST's "stfthop" releases (v0.0.3-audioset, hear21passt hop160base / hop100base): the `passt` front-end with STFT
# hop 160 / 100, so 10 s = 2000 / 3200 frames (their time tables have 200 / 320 positions).
FRONTEND_PRESETS["passt_hop160"] = {**FRONTEND_PRESETS["passt"], "hop_length": 160, "max_frames": 2000}
FRONTEND_PRESETS["passt_hop100"] = {**FRONTEND_PRESETS["passt"], "hop_length": 100, "max_frames": 3200}

# transformers' speech encoders (backbone "hub"). Their front-ends are of other kinds than this module's log-mel (the
# "kind" key; `modeling_spa.frontends` builds each kind). The backbone adapts these presets to the checkpoint: mel bins
# and frames from its config, `do_normalize` from its feature extractor's settings.
# Wav2Vec2FeatureExtractor (wav2vec2, HuBERT, WavLM, Data2Vec-Audio, SEW, SEW-D, UniSpeech, UniSpeech-SAT,
# wav2vec2-Conformer): the raw 16 kHz waveform, zero-mean unit-variance per clip over its real samples (do_normalize).
FRONTEND_PRESETS["waveform"] = {"kind": "waveform", "sampling_rate": 16000, "do_normalize": True, "min_samples": 400}
# WhisperFeatureExtractor: the clip zero-padded (or cropped) to 30 s, centred STFT (periodic Hann 400 = n_fft, hop 160),
# power, Slaney mel 0 - 8 kHz with Slaney norm, log10 floored at 1e-10, the last frame dropped (3000 frames), clamped
# to the clip's maximum - 8, then (x + 4) / 4. 80 bins up to large-v2, 128 from large-v3.
FRONTEND_PRESETS["whisper"] = {
    "kind": "whisper",
    "sampling_rate": 16000,
    "n_mels": 80,
    "n_fft": 400,
    "hop_length": 160,
    "max_samples": 480000,
    "max_frames": 3000,
}
FRONTEND_PRESETS["whisper_128"] = {**FRONTEND_PRESETS["whisper"], "n_mels": 128}
# SeamlessM4TFeatureExtractor (wav2vec2-BERT): the waveform scaled to 16-bit range, Kaldi fbank as AST's recipe but with
# Kaldi's default povey window, 80 bins from 20 Hz to 8 kHz and no dataset normalisation, then each bin normalised per
# clip over its real frames (unbiased variance), and frames stacked by 2 into 160 features.
FRONTEND_PRESETS["w2v_bert"] = {
    **FRONTEND_PRESETS["ast"],
    "kind": "stacked_fbank",
    "stride": 2,
    "waveform_scale": 2.0**15,
    "n_mels": 80,
    "window": "povey",
    "normalize_mean": 0.0,
    "normalize_std": 1.0,
    "max_frames": None,
    # The extractor's numpy `spectrogram` computes in float64 but stores the FFT as complex64 and the log-mel as
    # float32: computed so, our fbank is its bit for bit (in float32 throughout, the weak bins of a frame, a 20 Hz band
    # or what a codec cut, are off by up to 1e-4 after the per-bin normalisation).
    "compute_dtype": "float64",
    "round_spectrum": True,
}


def frontend_preset(name: str) -> dict:
    """A copy of the front-end preset `name`, safe to edit and to store in a config."""
    if name not in FRONTEND_PRESETS:
        raise ValueError(f"Unknown front-end preset {name!r}; known presets: {', '.join(sorted(FRONTEND_PRESETS))}")
    return copy.deepcopy(FRONTEND_PRESETS[name])


def build_window(win_length: int, window: str = "hann", periodic: bool = True) -> np.ndarray:
    """Analysis window of `win_length` samples (float64); "povey" is Kaldi's default, hann ** 0.85. "hann_torch" is
    the Hann window as `torch.hann_window` computes it in float32 (up to 2.4e-7 from the exact one), which
    Whisper's feature extractor uses: weak bins carry the difference (7e-6 in Whisper's features)."""
    if window == "hann_torch":
        return torch.hann_window(win_length, periodic=periodic, dtype=torch.float32, device="cpu").double().numpy()
    if window not in ("hann", "povey", "hamming"):
        raise ValueError(f"window must be 'hann', 'hann_torch', 'povey' or 'hamming', got {window!r}")
    return window_function(win_length, window, periodic=periodic)


def build_mel_filters(
    sampling_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    mel_scale: str = "htk",
    mel_norm: str | None = None,
) -> np.ndarray:
    """Mel filterbank (n_fft // 2 + 1, n_mels), float64.

    Kaldi filters are triangles in mel space (as Kaldi, torchaudio's `get_mel_banks` and hence AST and PaSST
    build them); HTK and Slaney filters are triangles in Hz (torchaudio's `melscale_fbanks`, librosa).
    """
    if mel_scale not in ("htk", "slaney", "kaldi"):
        raise ValueError(f"mel_scale must be 'htk', 'slaney' or 'kaldi', got {mel_scale!r}")
    if f_max > sampling_rate / 2:
        raise ValueError(f"f_max ({f_max}) must not exceed the Nyquist frequency ({sampling_rate / 2})")
    with warnings.catch_warnings():
        # AST's own recipe (128 Kaldi bands on a 512-point FFT) has an empty lowest band: it is the reference,
        # its output is the constant floor, and a warning at every model build would only be noise.
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        return mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=f_min,
            max_frequency=f_max,
            sampling_rate=sampling_rate,
            norm=mel_norm,
            mel_scale=mel_scale,
            triangularize_in_mel_space=mel_scale == "kaldi",
        )


def reflect_tails(waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row of a padded batch (B, samples) continued past its real end (`lengths`, (B,)) as the reflection
    padding of centred framing continues a clip alone: x[n + k] = x[n - 2 - k] beyond its n samples.

    Centred frames near a clip's end reach half an FFT past it. Alone, the clip's own reflection fills that; in a
    padded batch it would be zeros (or another clip's padding), so a clip's last frames, and everything a backbone
    computes from them, would depend on the batch. Rows that fill the batch are unchanged; positions further than
    the clip's length past its end (frames no mask keeps) repeat its first sample.
    """
    positions = torch.arange(waveform.shape[-1], device=waveform.device)
    ends = lengths.to(positions.device)[:, None]
    index = torch.where(positions < ends, positions, (2 * (ends - 1) - positions).clamp_min(0))
    return waveform.gather(1, index)


class LogMelFrontend(nn.Module):
    """Batched log-mel spectrogram with per-backbone presets (see the module docstring for the conventions).

    Build it with `LogMelFrontend(**frontend_preset("passt"))`. The window and the mel filterbank are derived from
    the arguments, so they are non-persistent buffers (float32, or `compute_dtype`): they never enter a state dict.
    `from_pretrained`
    builds models on the meta device and refills non-persistent buffers with uninitialised memory; call
    `reset_buffers()` from the model's `_init_weights`. As a safety net, `forward` also recomputes them whenever the
    buffer tensors were replaced since they were last computed (meta, re-allocated, or cast to another dtype).

    The computation always runs in float32 (`compute_dtype="float64"` where a reference computes in double precision
    and its weak bins must match too: wav2vec2-BERT's numpy fbank, which stores its FFT as complex64: `round_spectrum`
    rounds ours there too) with autocast disabled, whatever the input dtype,
    and without autograd: the features are an input to the backbone, not differentiable with respect to the waveform.
    """

    def __init__(
        self,
        *,
        sampling_rate: int = 16000,
        n_mels: int = 64,
        win_length: int = 400,
        hop_length: int = 160,
        n_fft: int = 512,
        f_min: float = 0.0,
        f_max: float | None = None,
        window: str = "hann",
        periodic_window: bool = True,
        mel_scale: str = "htk",
        mel_norm: str | None = None,
        log: str = "natural",
        log_offset: float = 0.0,
        mel_floor: float = 1e-10,
        preemphasis: float = 0.0,
        preemphasis_per_frame: bool = False,
        remove_dc_offset: bool = False,
        center: bool = True,
        normalize_mean: float = 0.0,
        normalize_std: float = 1.0,
        frame_padding_value: float = 0.0,
        max_frames: int | None = None,
        compute_dtype: str = "float32",
        round_spectrum: bool = False,
    ):
        super().__init__()
        if compute_dtype not in ("float32", "float64"):
            raise ValueError(f"compute_dtype must be 'float32' or 'float64', got {compute_dtype!r}")
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
        if log not in ("natural", "db", "log10"):
            raise ValueError(f"log must be 'natural', 'db' or 'log10', got {log!r}")
        if remove_dc_offset and not preemphasis_per_frame and preemphasis:
            raise ValueError("remove_dc_offset is per frame (Kaldi): use it with preemphasis_per_frame=True")
        if normalize_std <= 0:
            raise ValueError(f"normalize_std must be positive, got {normalize_std}")
        self.sampling_rate = sampling_rate
        self.n_mels = n_mels
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.f_min = f_min
        self.f_max = float(sampling_rate / 2 if f_max is None else f_max)
        self.window_name = window
        self.periodic_window = periodic_window
        self.mel_scale = mel_scale
        self.mel_norm = mel_norm
        self.log = log
        self.log_offset = log_offset
        self.mel_floor = mel_floor
        self.preemphasis = preemphasis
        self.preemphasis_per_frame = preemphasis_per_frame
        self.remove_dc_offset = remove_dc_offset
        self.center = center
        self.normalize_mean = normalize_mean
        self.normalize_std = normalize_std
        self.frame_padding_value = frame_padding_value
        self.max_frames = max_frames
        self.compute_dtype = getattr(torch, compute_dtype)
        self.round_spectrum = round_spectrum
        # Fail on a bad window or filterbank now, not at the first forward.
        window_values, mel_values = self._buffer_values()
        self.register_buffer("window", torch.from_numpy(window_values), persistent=False)
        self.register_buffer("mel_filters", torch.from_numpy(mel_values), persistent=False)
        self.window._spa_frontend_computed = True
        self.mel_filters._spa_frontend_computed = True

    def _buffer_values(self) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.float64 if self.compute_dtype == torch.float64 else np.float32
        window = build_window(self.win_length, self.window_name, self.periodic_window).astype(dtype)
        mel_filters = build_mel_filters(
            self.sampling_rate, self.n_fft, self.n_mels, self.f_min, self.f_max, self.mel_scale, self.mel_norm
        ).astype(dtype)
        return window, mel_filters

    @torch.no_grad()
    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the window and the mel filterbank (`compute_dtype`) on `device`, by default where they are now.

        Call it from `PreTrainedModel._init_weights`: after `from_pretrained` the non-persistent buffers hold
        uninitialised memory. Buffers that already have the right device, shape and dtype are filled in place.
        """
        device = self.window.device if device is None else torch.device(device)
        for name, values in zip(("window", "mel_filters"), self._buffer_values(), strict=True):
            current = getattr(self, name)
            new = torch.from_numpy(values).to(device)
            reusable = not current.is_meta and current.device == new.device and current.dtype == new.dtype
            if reusable and current.shape == new.shape:
                current.copy_(new)
                new = current
            else:
                setattr(self, name, new)
            # A mark on the tensor object itself: `to`, `to_empty` and `from_pretrained` replace the tensors by new
            # ones without it, while in-place updates (DDP's buffer broadcast) keep it. Unlike a data pointer, it
            # cannot be fooled by the allocator handing the freed memory to the replacement.
            new._spa_frontend_computed = True

    def _ensure_buffers(self, device: torch.device) -> None:
        if torch.compiler.is_compiling():
            return
        for buffer in (self.window, self.mel_filters):
            stale = buffer.dtype != self.compute_dtype or not getattr(buffer, "_spa_frontend_computed", False)
            if buffer.is_meta or stale:
                self.reset_buffers(device if buffer.is_meta else buffer.device)
                return

    @property
    def min_samples(self) -> int:
        """The shortest clip that fills one analysis window with real audio; shorter clips carry no frame.

        Centred framing would give such a clip a frame made mostly of reflection padding, and Kaldi framing none at
        all (a clip without frames pools to nothing and poisons a loss with NaN), so both count it as unusable.
        """
        return self.win_length + int(bool(self.preemphasis) and not self.preemphasis_per_frame)

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames produced for a clip of `num_samples` samples, before `max_frames` (0 if too short)."""
        if self.preemphasis and not self.preemphasis_per_frame:
            num_samples = num_samples - 1
        if self.center:
            frames = 1 + num_samples // self.hop_length
        else:
            frames = 1 + (num_samples - self.win_length) // self.hop_length
        if isinstance(frames, torch.Tensor):
            return frames.clamp_min(0)
        return max(int(frames), 0)

    def _frames(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Windowed frames zero-padded to n_fft (B, T, n_fft), built in one buffer to save memory passes.

        `lengths` (B,): each row's real samples, for a padded batch (None: every row is real throughout).
        """
        coefficient = self.preemphasis
        if coefficient and not self.preemphasis_per_frame:
            waveform = waveform[:, 1:] - coefficient * waveform[:, :-1]
            lengths = None if lengths is None else lengths - 1
        if self.center and lengths is not None:
            waveform = reflect_tails(waveform, lengths)
        if self.center:
            pad = self.n_fft // 2
            if waveform.shape[-1] <= pad:
                raise ValueError(f"Input of {waveform.shape[-1]} samples is too short for centred frames ({pad + 1})")
            waveform = nn.functional.pad(waveform[:, None], (pad, pad), mode="reflect")[:, 0]
            # torch.stft centres the window in the n_fft buffer; a circular shift leaves the power unchanged, so
            # take the win_length samples under the window and put them at the start of the buffer.
            offset = (self.n_fft - self.win_length) // 2
            waveform = waveform[:, offset : waveform.shape[-1] - (self.n_fft - self.win_length - offset)]
        elif waveform.shape[-1] < self.win_length:
            raise ValueError(f"Input of {waveform.shape[-1]} samples is shorter than one frame ({self.win_length})")
        per_frame = bool(coefficient) and self.preemphasis_per_frame
        # Kaldi pre-emphasis of a frame, y[n] = x[n] - c * x[n - 1] with y[0] = (1 - c) * x[0], equals the
        # signal-level filter except at n = 0; and it maps the frame mean m to (1 - c) * m. So DC removal followed
        # by pre-emphasis is: filter the signal once, frame it, subtract (1 - c) * m, and fix the first sample.
        source = waveform[:, 1:] - coefficient * waveform[:, :-1] if per_frame else waveform
        if per_frame:
            source = nn.functional.pad(source[:, None], (1, 0))[:, 0]
        frames = source.unfold(-1, self.win_length, self.hop_length)
        batch_size, num_frames, _ = frames.shape
        buffer = frames.new_empty(batch_size, num_frames, self.n_fft)
        buffer[..., self.win_length :].zero_()
        windowed = buffer[..., : self.win_length]
        scale = 1.0 - coefficient if per_frame else 1.0
        windowed.copy_(frames)
        if self.remove_dc_offset:
            # In place on the view, not `out=` into it: inductor cannot recompile `out=` into a strided slice for new
            # shapes, and the copy-then-subtract costs the same on the CPU.
            means = nn.functional.avg_pool1d(waveform[:, None], self.win_length, self.hop_length)[:, 0]
            windowed.sub_((scale * means)[..., None])
        if per_frame:
            first = waveform[:, :: self.hop_length][:, :num_frames]
            windowed[..., 0] = scale * (first - means) if self.remove_dc_offset else scale * first
        windowed.mul_(self.window)
        return buffer

    def _log(self, mel: torch.Tensor) -> torch.Tensor:
        if self.log_offset:
            mel = mel + self.log_offset
        mel = mel.clamp(self.mel_floor, _FLOAT32_MAX)  # a sum of huge bins overflows to inf
        if self.log == "db":
            return 10.0 * torch.log10(mel)
        if self.log == "log10":  # Whisper's
            return torch.log10(mel)
        return torch.log(mel)

    @torch.no_grad()
    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel features and their frame mask.

        Args:
            input_values: waveforms (B, samples) at `sampling_rate`, any floating dtype.
            attention_mask: (B, samples), 1 for real samples; padding must be on the right.

        Returns:
            features (B, frames, n_mels) in `compute_dtype`, and frame_mask (B, frames) bool: True for the frames
            the clip's real audio produces on its own. Other frames hold `frame_padding_value` (normalised). With
            `max_frames` set, frames is `max_frames`.
        """
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be (batch, samples), got shape {tuple(input_values.shape)}")
        self._ensure_buffers(input_values.device)
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            waveform = input_values.to(self.compute_dtype)
            lengths = None if attention_mask is None else attention_mask.to(waveform.device).long().sum(dim=-1)
            spectrum = torch.view_as_real(torch.fft.rfft(self._frames(waveform, lengths)))
            if self.round_spectrum:  # where a float64 reference stores its FFT as complex64 (the class docstring)
                spectrum = spectrum.float().to(self.compute_dtype)
            # re^2 + im^2 in one pass: abs() would take a square root, .real/.imag sums take three passes.
            power = spectrum[..., 0].square().addcmul_(spectrum[..., 1], spectrum[..., 1])
            # Samples beyond ~1e19 (garbage, but finite) square to inf, and inf times a zero filter weight is NaN:
            # keep the features finite (the log caps them at ~88.7) so one such clip cannot poison a batch.
            power.clamp_(max=_FLOAT32_MAX)
            log_mel = self._log(torch.matmul(power, self.mel_filters))
            batch_size, frames, _ = log_mel.shape
            if lengths is None:
                lengths = torch.full((batch_size,), input_values.shape[-1], device=log_mel.device)
            frame_mask = torch.arange(frames, device=log_mel.device) < self.num_frames(lengths)[:, None]
            if self.max_frames is not None:
                extra = self.max_frames - frames
                log_mel = nn.functional.pad(log_mel, (0, 0, 0, extra)) if extra else log_mel
                frame_mask = nn.functional.pad(frame_mask, (0, extra), value=False) if extra else frame_mask
            log_mel = torch.where(frame_mask[..., None], log_mel, self.frame_padding_value)
            return log_mel.sub_(self.normalize_mean).div_(self.normalize_std), frame_mask

    def extra_repr(self) -> str:
        return (
            f"sampling_rate={self.sampling_rate}, n_mels={self.n_mels}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_fft={self.n_fft}, mel_scale={self.mel_scale!r}, log={self.log!r}"
        )


__all__ = ["FRONTEND_PRESETS", "LogMelFrontend", "build_mel_filters", "build_window", "frontend_preset"]
