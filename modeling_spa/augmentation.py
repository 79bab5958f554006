"""Training-time augmentation, run inside the model in training mode only: random gain, time shift, mixup, SpecAugment.

The settings are `SPAConfig.augmentation` (a dict of `AugmentationConfig` fields; None or all defaults: nothing), so a
checkpoint records how it was trained, as wav2vec2 records its SpecAugment in its config. `model.eval()` turns all of
it off. Order in a training forward pass:

1. per clip, on the waveform: gain (uniform in [min_gain_db, max_gain_db] dB), then a time shift (uniform in
   ±time_shift_s, within the clip's real samples: `roll` wraps the clip around, `pad` moves it and fills with silence);
2. mixup (Zhang et al. 2018; PaSST's variant): clip i becomes λ_i · x_i + (1 − λ_i) · x_π(i) for a random permutation
   π of the batch, λ_i ~ Beta(α, α) folded to max(λ, 1 − λ) so that each clip stays the larger part of its own mix,
   with probability `mixup_prob` per clip (else λ_i = 1); on the waveform or the log-mel (`mixup_domain`), and the
   labels mix the same way (soft labels, which BCE, OBCE and L_SPA take);
3. SpecAugment (Park et al. 2019) on the normalised log-mel: `freq_masks` bands of 0..freq_mask_width mel bins and
   `time_masks` spans of 0..time_mask_width frames, each width and position uniform, set to `mask_value`. The default 0
   is the normalisation mean of the `ast`, `passt` and `tiny` presets (PANNs masks after its own normalisation, with 0,
   too); AST's and PaSST's recipes mask with 0 *before* normalising, which is −normalize_mean / normalize_std after it
   (AST 0.467, PaSST 0.9): set `mask_value` to that to reproduce them.

Every draw comes from torch's global generator on the input's device, inside the forward pass: no host reads, the same
shapes for every batch (so `torch.compile` compiles once), and a checkpoint's saved RNG state replays it on resume. The
forward pass reads the settings as the config's plain dict (complete and validated by `AugmentationConfig` when it is
set), which `torch.compile` traces as constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import torch

MIXUP_DOMAINS = ("logmel", "waveform")
TIME_SHIFT_MODES = ("roll", "pad")


@dataclass(frozen=True)
class AugmentationConfig:
    """What the model does to a training batch (see the module docstring); the defaults do nothing."""

    # The help texts show in `recipes/train.py --help`, which takes these fields as its augmentation arguments.
    min_gain_db: float = field(default=0.0, metadata={"help": "random gain per clip, uniform from this (dB)"})
    max_gain_db: float = field(default=0.0, metadata={"help": "... to this (dB)"})
    time_shift_s: float = field(default=0.0, metadata={"help": "random time shift per clip, at most this (s)"})
    time_shift_mode: str = field(default="roll", metadata={"help": "roll (wrap around) or pad (fill with silence)"})
    mixup_alpha: float = field(default=0.0, metadata={"help": "mixup λ ~ Beta(α, α); 0: no mixup"})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability that a clip is mixed"})
    mixup_domain: str = field(default="logmel", metadata={"help": "logmel or waveform"})
    freq_masks: int = field(default=0, metadata={"help": "SpecAugment: frequency masks per clip"})
    freq_mask_width: int = field(default=0, metadata={"help": "... each 0 to this many mel bins wide"})
    time_masks: int = field(default=0, metadata={"help": "SpecAugment: time masks per clip"})
    time_mask_width: int = field(default=0, metadata={"help": "... each 0 to this many frames wide"})
    mask_value: float = field(default=0.0, metadata={"help": "masked value, in the normalised log-mel"})

    def __post_init__(self):
        if self.min_gain_db > self.max_gain_db:
            raise ValueError(f"min_gain_db ({self.min_gain_db}) exceeds max_gain_db ({self.max_gain_db})")
        if self.time_shift_mode not in TIME_SHIFT_MODES:
            raise ValueError(f"time_shift_mode must be one of {TIME_SHIFT_MODES}, got {self.time_shift_mode!r}")
        if self.mixup_domain not in MIXUP_DOMAINS:
            raise ValueError(f"mixup_domain must be one of {MIXUP_DOMAINS}, got {self.mixup_domain!r}")
        if not 0 <= self.mixup_prob <= 1:
            raise ValueError(f"mixup_prob must be in [0, 1], got {self.mixup_prob}")
        negative = [f.name for f in fields(self) if f.name not in ("min_gain_db", "max_gain_db", "mask_value")
                    and isinstance(getattr(self, f.name), (int, float)) and getattr(self, f.name) < 0]  # fmt: skip
        if negative:
            raise ValueError(f"{', '.join(negative)} must not be negative")

    @classmethod
    def from_dict(cls, settings: dict | None) -> AugmentationConfig:
        """From a config's `augmentation` dict; an unknown key is an error naming it."""
        settings = dict(settings or {})
        if unknown := sorted(set(settings) - {f.name for f in fields(cls)}):
            raise ValueError(f"unknown augmentation settings {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**settings)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mixup(self) -> bool:
        return mixup_enabled(self.to_dict())

    def describe(self) -> str:
        """One line for model cards: what was on."""
        parts = []
        if self.min_gain_db or self.max_gain_db:
            parts.append(f"random gain {self.min_gain_db:+g} to {self.max_gain_db:+g} dB")
        if self.time_shift_s:
            parts.append(f"time shift ±{self.time_shift_s:g} s ({self.time_shift_mode})")
        if self.mixup:
            domain = "log-mel" if self.mixup_domain == "logmel" else self.mixup_domain
            parts.append(f"mixup Beta({self.mixup_alpha:g}, {self.mixup_alpha:g}) on the {domain}, "
                         f"p = {self.mixup_prob:g}")  # fmt: skip
        if self.freq_masks and self.freq_mask_width:
            parts.append(f"SpecAugment {self.freq_masks} × ≤ {self.freq_mask_width} mel bins")
        if self.time_masks and self.time_mask_width:
            parts.append(f"SpecAugment {self.time_masks} × ≤ {self.time_mask_width} frames")
        if any(p.startswith("SpecAugment") for p in parts):
            parts.append(f"masked value {self.mask_value:g} (normalised log-mel)")
        return "; ".join(parts) or "none"


def training_augmentation(settings: Mapping | None, training: bool) -> Mapping | None:
    """The settings (a complete `AugmentationConfig` dict) to apply now: None in evaluation or when there are none."""
    return settings if training and settings else None


def mixup_enabled(settings: Mapping) -> bool:
    return settings["mixup_alpha"] > 0 and settings["mixup_prob"] > 0


def random_gain(waveform: torch.Tensor, min_db: float, max_db: float) -> torch.Tensor:
    """Each clip (row) scaled by its own gain, uniform in [min_db, max_db] dB."""
    db = torch.empty(waveform.shape[0], 1, device=waveform.device).uniform_(min_db, max_db)
    return waveform * torch.pow(10.0, db / 20.0).to(waveform.dtype)


def time_shift(waveform: torch.Tensor, lengths: torch.Tensor, max_shift: int, mode: str = "roll") -> torch.Tensor:
    """Each clip shifted by its own whole number of samples in [-max_shift, max_shift], within its `lengths` real
    samples (padding stays where it is): `roll` wraps around, `pad` fills the vacated samples with silence."""
    batch, samples = waveform.shape
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1), device=waveform.device)
    position = torch.arange(samples, device=waveform.device)
    length = lengths.to(waveform.device)[:, None].clamp_min(1)
    source = position - shift
    if mode == "roll":
        source = source.remainder(length)
    inside = (source >= 0) & (source < length)
    shifted = torch.where(inside, waveform.gather(1, source.clamp(0, samples - 1)), 0.0)
    return torch.where(position < length, shifted, waveform)


def draw_mixup(batch_size: int, alpha: float, prob: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, λ) for `mix`: a random permutation of the batch, and per clip λ ~ Beta(α, α) folded to max(λ, 1 − λ),
    or 1 (no mixing) with probability 1 − `prob`."""
    # argsort of uniforms, not randperm: inductor (torch 2.13) fails to compile randperm.
    index = torch.rand(batch_size, device=device).argsort()
    gamma = torch._standard_gamma(torch.full((2, batch_size), float(alpha), device=device))
    total = gamma.sum(dim=0)
    lam = torch.where(total > 0, gamma[0] / total.clamp_min(torch.finfo(total.dtype).tiny), 1.0)  # Beta(α, α)
    lam = torch.maximum(lam, 1.0 - lam)
    return index, torch.where(torch.rand(batch_size, device=device) < prob, lam, 1.0)


def mix(values: torch.Tensor, index: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """λ_i · values_i + (1 − λ_i) · values_index(i), for any (batch, ...) tensor."""
    lam = lam.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    return lam * values + (1.0 - lam) * values[index]


def mix_mask(mask: torch.Tensor, index: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The mask of a mixed batch: a sample (frame) is real where either clip of the mix has one."""
    mixed = lam.reshape(-1, *([1] * (mask.dim() - 1))) < 1
    return torch.where(mixed, torch.maximum(mask, mask[index]), mask)


def band_mask(batch: int, size: int, count: int, max_width: int, device: torch.device) -> torch.Tensor:
    """(batch, size) bool: `count` bands per row, each of a width uniform in 0..max_width, placed uniformly."""
    width = (torch.rand(batch, count, 1, device=device) * (min(max_width, size) + 1)).floor()
    start = (torch.rand(batch, count, 1, device=device) * (size - width + 1)).floor()
    position = torch.arange(size, device=device)
    return ((position >= start) & (position < start + width)).any(dim=1)


def spec_augment(features: torch.Tensor, settings: Mapping) -> torch.Tensor:
    """SpecAugment frequency and time masks on normalised log-mel features (batch, frames, mels), set to
    `settings["mask_value"]`. Without masks, any features pass unchanged (a waveform front-end's too)."""
    if not (settings["freq_masks"] and settings["freq_mask_width"]) and not (
        settings["time_masks"] and settings["time_mask_width"]
    ):
        return features
    if features.dim() != 3:
        raise ValueError(
            "SpecAugment masks spectrogram frames and bins, and this front-end makes a waveform: wav2vec2-style "
            "backbones mask their own features (their config's mask_time_prob / mask_feature_prob)."
        )
    batch, frames, mels = features.shape
    masked = torch.zeros(batch, frames, mels, dtype=torch.bool, device=features.device)
    if settings["freq_masks"] and settings["freq_mask_width"]:
        bands = band_mask(batch, mels, settings["freq_masks"], settings["freq_mask_width"], features.device)
        masked = masked | bands[:, None, :]
    if settings["time_masks"] and settings["time_mask_width"]:
        spans = band_mask(batch, frames, settings["time_masks"], settings["time_mask_width"], features.device)
        masked = masked | spans[:, :, None]
    return torch.where(masked, float(settings["mask_value"]), features)


def augment_waveform(
    waveform: torch.Tensor, attention_mask: torch.Tensor | None, settings: Mapping, sampling_rate: int
) -> torch.Tensor:
    """Step 1 of the module docstring: gain, then time shift, per clip."""
    if settings["min_gain_db"] or settings["max_gain_db"]:
        waveform = random_gain(waveform, settings["min_gain_db"], settings["max_gain_db"])
    max_shift = int(round(settings["time_shift_s"] * sampling_rate))
    if max_shift:
        lengths = (
            attention_mask.sum(dim=-1)
            if attention_mask is not None
            else torch.full((waveform.shape[0],), waveform.shape[-1], device=waveform.device)
        )
        waveform = time_shift(waveform, lengths, max_shift, settings["time_shift_mode"])
    return waveform


__all__ = [
    "AugmentationConfig",
    "augment_waveform",
    "band_mask",
    "draw_mixup",
    "mix",
    "mix_mask",
    "mixup_enabled",
    "random_gain",
    "spec_augment",
    "time_shift",
    "training_augmentation",
]
