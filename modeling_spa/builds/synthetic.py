"""Synthetic sounds for real AudioSet classes, for the offline demo dataset (`recipes/build_demo_dataset.py`).

Every entry of `SOUND_CLASSES` maps an exact AudioSet display name (as in `class_labels_indices.csv`) to a
numpy synthesiser `(rng, duration_s, sample_rate) -> float32 waveform`. Parameters (pitch, modulation rate,
cadence, timbre) are drawn from `rng`, so one class yields many different clips and the same generator state
always yields the same clip.

The classes are picked so that the ontology matters: parents and children (Siren > Police car (siren),
Noise > White noise, Sine wave > Chirp tone, ...) and siblings (the four sirens, the telephone tones, the noise
colours) sound alike, while the top-level categories sound different. A few acoustic near-twins sit far apart
in the ontology on purpose (Tuning fork vs Sine wave, Buzz vs Mains hum), as in real AudioSet.

Speech classes are synthesised with the `espeak-ng` program when it is on PATH; otherwise they are simply not
available (`speech_available()` tells). espeak-ng output is, strictly, "Speech synthesizer"; the demo labels
it with the voice's speech class because it only needs speech-like spectra with two voice registers.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.fft import next_fast_len
from scipy.signal import fftconvolve

Synth = Callable[[np.random.Generator, float, int], np.ndarray]

SPEECH = "Speech"
MALE_SPEECH = "Male speech, man speaking"
FEMALE_SPEECH = "Female speech, woman speaking"
SPEECH_CLASSES = (SPEECH, MALE_SPEECH, FEMALE_SPEECH)
_SPEECH_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Please leave a message after the tone.",
    "Turn left at the next corner, then continue straight ahead.",
    "The weather tomorrow will be cloudy with a chance of rain.",
    "Seven people were waiting at the station for the morning train.",
    "Could you tell me where the nearest library is?",
    "Numbers one, two, three, four and five are on the list.",
    "Thank you for calling, all of our lines are busy right now.",
)
# espeak-ng voice variants and pitches (0-99) per speech class; "Speech" mixes both registers.
_VOICES = {
    MALE_SPEECH: (("en+m1", 30), ("en+m3", 40), ("en-us+m2", 35)),
    FEMALE_SPEECH: (("en+f2", 65), ("en+f3", 70), ("en-us+f4", 75)),
}
_VOICES[SPEECH] = _VOICES[MALE_SPEECH] + _VOICES[FEMALE_SPEECH]
_WAVETABLE_SIZE = 4096
_DIRECT_HITS = 64  # up to this many hits, adding the kernel in place beats an FFT convolution


# -- building blocks ---------------------------------------------------------------------------------------
def num_samples(duration_s: float, sample_rate: int) -> int:
    """Number of samples of a clip; at least one so that every synthesiser returns a real signal."""
    return max(1, round(duration_s * sample_rate))


def _times(n: int, sample_rate: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sample_rate


def _phase(freq: np.ndarray | float, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Running phase of an oscillator whose frequency may change every sample, from a random start phase."""
    freq = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return 2 * np.pi * np.cumsum(freq) / sample_rate + rng.uniform(0, 2 * np.pi)


def _tone(
    freq: np.ndarray | float,
    n: int,
    sample_rate: int,
    rng: np.random.Generator,
    amplitudes: Sequence[float] = (1.0,),
) -> np.ndarray:
    """Additive tone: harmonic k+1 with amplitude `amplitudes[k]`, at a frequency that may change per sample.

    Harmonics that would pass 0.45 x the sample rate are dropped, so nothing aliases at low sample rates.
    Several harmonics are read from a one-period wavetable: one interpolation instead of one sine each.
    """
    phase = _phase(freq, n, sample_rate, rng)
    top = float(np.max(freq))
    amps = np.array([amp if (k + 1) * top < 0.45 * sample_rate else 0.0 for k, amp in enumerate(amplitudes)])
    if np.count_nonzero(amps) <= 2:
        return sum(amp * np.sin((k + 1) * phase) for k, amp in enumerate(amps) if amp) + np.zeros(n)
    grid = np.linspace(0.0, 1.0, _WAVETABLE_SIZE + 1)
    table = np.sin(2 * np.pi * np.outer(grid, np.arange(1, amps.size + 1))) @ amps
    cycles = phase / (2 * np.pi)
    return np.interp(cycles - np.floor(cycles), grid, table)


def _sawtooth_amps(count: int, tilt: float = 1.0) -> list[float]:
    return [1.0 / k**tilt for k in range(1, count + 1)]


def _square_amps(count: int) -> list[float]:
    return [1.0 / k if k % 2 else 0.0 for k in range(1, count + 1)]


def _gate(t: np.ndarray, on_s: float, period_s: float, offset_s: float = 0.0, ramp_s: float = 0.005) -> np.ndarray:
    """On/off cadence (on for `on_s` every `period_s`) with linear ramps so that switching does not click."""
    cycles = (t - offset_s) / period_s
    x = (cycles - np.floor(cycles)) * period_s
    return np.clip(np.minimum(x, on_s - x) / ramp_s, 0.0, 1.0)


def _pattern_gate(t: np.ndarray, segments: Sequence[tuple[float, float]], ramp_s: float = 0.005) -> np.ndarray:
    """A repeating cadence of (on_s, off_s) segments, e.g. [(0.4, 0.2), (0.4, 2.0)] for a UK double ring."""
    period = sum(on + off for on, off in segments)
    gate = np.zeros_like(t)
    start = 0.0
    for on, off in segments:
        gate = np.maximum(gate, _gate(t, on, period, start, ramp_s))
        start += on + off
    return gate


def _shaped_noise(rng: np.random.Generator, n: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Gaussian noise filtered in the frequency domain by `gain(frequency in cycles per sample)`, unit RMS.

    The FFT runs at the next fast length and is cut back to n: event lengths are random, and pocketfft is
    many times slower on lengths with large prime factors.
    """
    size = next_fast_len(n, real=True)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    noise = np.fft.irfft(spectrum * gain(np.fft.rfftfreq(size)), size)[:n]
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), no DC, unit RMS."""

    def gain(freqs: np.ndarray) -> np.ndarray:
        return np.where(freqs > 0, np.maximum(freqs, 1e-9) ** (-exponent / 2), 0.0)

    return _shaped_noise(rng, n, gain)


def _band_noise(rng: np.random.Generator, n: int, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """White noise restricted to [low_hz, high_hz] with a brick-wall FFT mask, unit RMS."""
    return _shaped_noise(rng, n, lambda f: ((f * sample_rate >= low_hz) & (f * sample_rate <= high_hz)).astype(float))


def _smooth_random(rng: np.random.Generator, n: int, sample_rate: int, rate_hz: float) -> np.ndarray:
    """A slow random curve in [0, 1]: random control points every 1/rate_hz seconds, linearly interpolated."""
    count = max(2, int(np.ceil(n / sample_rate * rate_hz)) + 2)
    points = rng.uniform(0.0, 1.0, count)
    return np.interp(np.linspace(0, count - 1, n), np.arange(count), points)


def _decaying(n: int, sample_rate: int, freqs: Sequence[float], amps: Sequence[float], decay_s: float) -> np.ndarray:
    """A struck resonator: sum of exponentially decaying sines (higher partials decay faster)."""
    t = _times(n, sample_rate)
    out = np.zeros(n)
    for k, (freq, amp) in enumerate(zip(freqs, amps, strict=True)):
        if freq < 0.45 * sample_rate:
            out += amp * np.sin(2 * np.pi * freq * t) * np.exp(-t * (1 + k) / decay_s)
    return out


def _hits(n: int, sample_rate: int, onsets_s: np.ndarray, gains: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Place one impulse response `kernel` at every onset (a click track convolved with the hit sound)."""
    index = np.round(np.asarray(onsets_s) * sample_rate).astype(np.int64)
    keep = (index >= 0) & (index < n)
    index, gains = index[keep], np.asarray(gains, dtype=np.float64)[keep]
    if index.size > _DIRECT_HITS:
        track = np.zeros(n)
        np.add.at(track, index, gains)
        return fftconvolve(track, kernel)[:n]
    out = np.zeros(n)
    for start, gain in zip(index, gains, strict=True):
        stop = min(n, start + kernel.size)
        out[start:stop] += gain * kernel[: stop - start]
    return out


def _first_onset(rng: np.random.Generator, duration_s: float, within_s: float = 0.5) -> float:
    """Start of the first hit: early enough that even a short event contains one."""
    return float(rng.uniform(0, min(within_s, 0.5 * duration_s)))


def _regular_onsets(rng: np.random.Generator, duration_s: float, period_s: float, jitter_s: float = 0.0) -> np.ndarray:
    onsets = np.arange(_first_onset(rng, duration_s, period_s), duration_s, period_s)
    return onsets + rng.normal(0.0, jitter_s, onsets.size) if jitter_s else onsets


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


# -- Sounds of things: alarms and sirens -------------------------------------------------------------------
def alarm(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Generic electronic alarm: square-ish beeps alternating between two pitches at 2-6 Hz."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    f1 = _log_uniform(rng, 500, 2000)
    f2 = f1 * rng.uniform(1.0, 1.5)
    rate = rng.uniform(2, 6)
    freq = np.where(np.mod(t * rate, 2) < 1, f1, f2)
    return _tone(freq, n, sample_rate, rng, _square_amps(7)) * _gate(t, 0.7 / rate, 1.0 / rate)


def siren(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Generic siren: a tone whose pitch sweeps sinusoidally around 600-1100 Hz."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    centre = rng.uniform(600, 1100)
    freq = centre * (1 + rng.uniform(0.15, 0.4) * np.sin(2 * np.pi * rng.uniform(0.3, 3) * t + rng.uniform(0, 6)))
    return _tone(freq, n, sample_rate, rng, (1.0, 0.3, 0.15))


def civil_defense_siren(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Rotor siren: slow wail (period 6-12 s) between ~300 and ~550 Hz, hollow odd harmonics, swelling level."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    low = rng.uniform(250, 350)
    swing = 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(6, 12) + rng.uniform(0, 2 * np.pi))
    freq = low * (1 + rng.uniform(0.5, 0.9) * swing)
    # the level follows the rotor speed, so loud at the top of the wail
    return _tone(freq, n, sample_rate, rng, _square_amps(9)) * (0.35 + 0.65 * swing)


def police_siren(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Police "wail" (3-5 s sweeps) or "yelp" (4-6 sweeps per second) between ~650 and ~1500 Hz."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    period = rng.uniform(3, 5) if rng.random() < 0.5 else rng.uniform(0.17, 0.25)
    ramp = np.mod(t / period + rng.uniform(0, 1), 1.0)
    shape = np.where(ramp < 0.5, ramp * 2, 2 - ramp * 2) ** 0.7
    freq = rng.uniform(600, 750) + shape * rng.uniform(650, 850)
    return _tone(freq, n, sample_rate, rng, (1.0, 0.5, 0.35, 0.2))


def ambulance_siren(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """European "hi-lo": two steady pitches (~950 and ~750 Hz) alternating every 0.4-0.7 s."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    high = rng.uniform(880, 1000)
    low = high * rng.uniform(0.74, 0.84)
    half = rng.uniform(0.4, 0.7)
    freq = np.where(np.mod(t + rng.uniform(0, 2 * half), 2 * half) < half, high, low)
    return _tone(freq, n, sample_rate, rng, (1.0, 0.45, 0.3, 0.15))


def fire_engine_siren(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Mechanical wail: the pitch climbs fast to ~1 kHz and coasts down, sawtooth-bright, rough rotor buzz."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    period = rng.uniform(3, 6)
    phase = np.mod(t / period + rng.uniform(0, 1), 1.0)
    rise = rng.uniform(0.2, 0.35)
    shape = np.where(phase < rise, 1 - np.exp(-5 * phase / rise), np.exp(-3 * (phase - rise) / (1 - rise)))
    freq = rng.uniform(280, 380) + shape * rng.uniform(600, 850)
    roughness = 1 + 0.3 * np.sin(_phase(rng.uniform(25, 45), n, sample_rate, rng))
    return _tone(freq, n, sample_rate, rng, _sawtooth_amps(7)) * roughness


def smoke_detector(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Piercing ~3.2 kHz beeps in the "temporal three" cadence: three 0.5 s beeps, then a 1.5 s pause."""
    n = num_samples(duration_s, sample_rate)
    on = rng.uniform(0.4, 0.55)
    t = _times(n, sample_rate) + rng.uniform(0, 0.5 * on)  # an event starts with a beep
    gap = rng.uniform(0.4, 0.55)
    gate = _pattern_gate(t, [(on, gap), (on, gap), (on, rng.uniform(1.2, 1.8))])
    freq = rng.uniform(2900, 3400) * (1 + 0.004 * np.sin(2 * np.pi * 7 * t))
    return _tone(freq, n, sample_rate, rng, (1.0, 0.15)) * gate


def alarm_clock(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Digital alarm clock: groups of four short 2-3 kHz beeps, once a second."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    beep = rng.uniform(0.05, 0.08)
    group_period = rng.uniform(0.8, 1.1)
    in_group = np.mod(t, group_period)
    gate = _gate(in_group, beep, 2 * beep, 0.0, 0.003) * (in_group < 8 * beep)
    return _tone(rng.uniform(1900, 2800), n, sample_rate, rng, _square_amps(3)) * gate


# -- Sounds of things: telephone ---------------------------------------------------------------------------
def telephone(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Electronic telephone ringer: a 10-20 Hz warble between two tones, in a ring cadence."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)  # an event starts with a ring
    f1 = rng.uniform(700, 1100)
    warble = rng.uniform(10, 20)
    freq = np.where(np.mod(t * warble, 2) < 1, f1, f1 * rng.uniform(1.2, 1.4))
    cadence = [(0.4, 0.2), (0.4, 2.0)] if rng.random() < 0.5 else [(rng.uniform(1, 2), rng.uniform(1.5, 3))]
    return _tone(freq, n, sample_rate, rng, _square_amps(5)) * _pattern_gate(t, cadence)


def dial_tone(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Continuous dial tone: North American 350 + 440 Hz, UK 350 + 450 Hz or European 425 Hz."""
    n = num_samples(duration_s, sample_rate)
    pair = [(350.0, 440.0), (350.0, 450.0), (425.0,)][rng.integers(3)]
    detune = rng.uniform(0.99, 1.01)
    return sum(_tone(f * detune, n, sample_rate, rng, (1.0, 0.05)) for f in pair)


def busy_signal(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Busy tone: North American 480 + 620 Hz or European 425 Hz, 0.5 s on / 0.5 s off (faster when congested)."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    pair = [(480.0, 620.0), (425.0,)][rng.integers(2)]
    half = 0.5 if rng.random() < 0.7 else 0.25
    detune = rng.uniform(0.99, 1.01)
    tone = sum(_tone(f * detune, n, sample_rate, rng, (1.0, 0.05)) for f in pair)
    return tone * _gate(t, half, 2 * half)


def ringtone(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A mobile-phone melody: a random 4-8 note pentatonic phrase with a chiptune timbre, repeated."""
    n = num_samples(duration_s, sample_rate)
    root = _log_uniform(rng, 500, 1000)
    steps = rng.choice([0, 2, 4, 7, 9, 12, 14, 16], size=rng.integers(4, 9))
    note_s = rng.uniform(0.1, 0.2)
    notes = np.concatenate([root * 2 ** (steps / 12), [0.0] * int(rng.integers(2, 5))])  # zeros are rests
    index = (_times(n, sample_rate) / note_s).astype(np.int64)
    freq = notes[index % notes.size]
    within = np.mod(_times(n, sample_rate), note_s) / note_s
    envelope = np.exp(-3 * within) * np.clip(within * 50, 0, 1) * (freq > 0)
    return _tone(np.maximum(freq, 1.0), n, sample_rate, rng, (1.0, 0.4, 0.25, 0.1)) * envelope


def telephone_bell(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Electromechanical bell: a clapper strikes a metal gong 18-25 times a second during each ring."""
    n = num_samples(duration_s, sample_rate)
    f0 = rng.uniform(900, 1400)
    kernel = _decaying(int(0.25 * sample_rate), sample_rate, [f0, 2.08 * f0, 2.9 * f0], [1.0, 0.5, 0.3], 0.08)
    strikes = _regular_onsets(rng, duration_s, 1.0 / rng.uniform(18, 25))
    ring = _pattern_gate(strikes + rng.uniform(0, 0.5), [(rng.uniform(1, 2), rng.uniform(1.5, 3))], ramp_s=0.01)
    return _hits(n, sample_rate, strikes, ring * rng.uniform(0.7, 1.0, strikes.size), kernel)


def dtmf(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Touch-tone dialling: digits made of one row (697-941 Hz) and one column (1209-1477 Hz) tone."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    digit_s, gap_s = rng.uniform(0.06, 0.12), rng.uniform(0.05, 0.1)
    slot = (t / (digit_s + gap_s)).astype(np.int64)
    count = int(slot[-1]) + 1
    rows = np.array([697.0, 770.0, 852.0, 941.0])[rng.integers(4, size=count)]
    cols = np.array([1209.0, 1336.0, 1477.0])[rng.integers(3, size=count)]
    gate = _gate(t, digit_s, digit_s + gap_s, 0.0, 0.003) * (rng.random(count) < 0.85)[slot]  # some pauses
    return (_tone(rows[slot], n, sample_rate, rng) + _tone(cols[slot], n, sample_rate, rng)) * gate


# -- Sounds of things: clocks and bells --------------------------------------------------------------------
def _click_kernel(sample_rate: int, freq: float, decay_s: float) -> np.ndarray:
    freq = min(freq, 0.25 * sample_rate)  # keeps a click audible at low sample rates
    return _decaying(max(8, int(6 * decay_s * sample_rate)), sample_rate, [freq, 1.7 * freq], [1.0, 0.6], decay_s)


def tick(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A clock's tick: identical sharp 2-5 kHz clicks at a steady 1-4 per second."""
    n = num_samples(duration_s, sample_rate)
    kernel = _click_kernel(sample_rate, rng.uniform(2000, 5000), rng.uniform(0.002, 0.005))
    onsets = _regular_onsets(rng, duration_s, 1.0 / rng.uniform(1, 4))
    return _hits(n, sample_rate, onsets, np.ones(onsets.size), kernel)


def tick_tock(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A pendulum clock: "tick" and a lower, softer "tock" alternating, 1.5-3 beats per second."""
    n = num_samples(duration_s, sample_rate)
    freq = rng.uniform(2000, 4000)
    tick_kernel = _click_kernel(sample_rate, freq, 0.004)
    tock_kernel = _click_kernel(sample_rate, freq * rng.uniform(0.5, 0.7), 0.006)
    onsets = _regular_onsets(rng, duration_s, 2.0 / rng.uniform(1.5, 3))
    beat = onsets[1] - onsets[0] if onsets.size > 1 else 0.5
    tock = onsets + beat / 2
    return _hits(n, sample_rate, onsets, np.ones(onsets.size), tick_kernel) + _hits(
        n, sample_rate, tock, np.full(tock.size, 0.7), tock_kernel
    )


def tuning_fork(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A struck tuning fork: an almost pure tone with a brief clang partial and a slow decay."""
    n = num_samples(duration_s, sample_rate)
    f0 = float(rng.choice([256.0, 288.0, 320.0, 341.3, 384.0, 426.7, 440.0, 512.0]))
    t = _times(n, sample_rate)
    tone = np.sin(2 * np.pi * f0 * t) * np.exp(-t / rng.uniform(1.5, 4))
    clang = 0.3 * np.sin(2 * np.pi * 6.25 * f0 * t) * np.exp(-t / 0.03) if 6.25 * f0 < 0.45 * sample_rate else 0.0
    return tone + clang


# -- Source-ambiguous sounds -------------------------------------------------------------------------------
def sine_wave(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A steady pure tone, 100 Hz to 3 kHz."""
    n = num_samples(duration_s, sample_rate)
    return _tone(_log_uniform(rng, 100, 3000), n, sample_rate, rng)


def chirp_tone(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Repeated exponential sine sweeps (up or down) over one or more octaves."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    low = _log_uniform(rng, 100, 800)
    high = min(low * 2 ** rng.uniform(1, 4), 0.4 * sample_rate)
    position = np.mod(t / rng.uniform(0.2, 2.0), 1.0)
    position = position if rng.random() < 0.5 else 1 - position
    return _tone(low * (high / low) ** position, n, sample_rate, rng)


def harmonic(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A steady tone with 3-8 harmonics of random strength over a 100-800 Hz fundamental."""
    n = num_samples(duration_s, sample_rate)
    amps = rng.uniform(0.2, 1.0, rng.integers(3, 9))
    amps[0] = 1.0
    return _tone(_log_uniform(rng, 100, 800), n, sample_rate, rng, amps)


def beep(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Short electronic beeps (50-300 ms, 800-3000 Hz) at irregular intervals."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    length = rng.uniform(0.05, 0.3)
    count = int(duration_s / (length + 0.1)) + 2
    gaps = np.cumsum(rng.uniform(length + 0.1, length + 1.2, count))
    starts = _first_onset(rng, duration_s) + np.concatenate([[0.0], gaps])
    slot = np.searchsorted(starts, t, side="right") - 1
    since = t - starts[np.maximum(slot, 0)]
    gate = np.clip(np.minimum(since, length - since) / 0.004, 0, 1) * (slot >= 0)
    return _tone(_log_uniform(rng, 800, 3000), n, sample_rate, rng, (1.0, 0.1)) * gate


def ding(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A struck "ding": 600-2000 Hz with a little 2nd and 3rd partial, decaying over ~0.5 s, once or a few times."""
    n = num_samples(duration_s, sample_rate)
    f0 = _log_uniform(rng, 600, 2000)
    kernel = _decaying(int(1.5 * sample_rate), sample_rate, [f0, 2.0 * f0, 3.0 * f0], [1.0, 0.3, 0.15], 0.4)
    onsets = np.sort(rng.uniform(0, max(duration_s - 0.3, 0.0), rng.integers(1, 4)))
    return _hits(n, sample_rate, onsets, rng.uniform(0.6, 1.0, onsets.size), kernel)


def pulse(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A regular throb of short, low tone bursts (150-500 Hz, 2-8 per second)."""
    n = num_samples(duration_s, sample_rate)
    freq = _log_uniform(rng, 150, 500)
    kernel = _decaying(int(0.08 * sample_rate), sample_rate, [freq], [1.0], rng.uniform(0.01, 0.03))
    onsets = _regular_onsets(rng, duration_s, 1.0 / rng.uniform(2, 8))
    return _hits(n, sample_rate, onsets, np.ones(onsets.size), kernel)


def clicking(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Irregular clicks in bursts (keyboard, mouse, switch): short broadband snaps at random times."""
    n = num_samples(duration_s, sample_rate)
    length = max(8, int(0.004 * sample_rate))
    kernel = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.001 * sample_rate))
    rate = rng.uniform(3, 12)
    gaps = np.cumsum(rng.exponential(1.0 / rate, int(2 * rate * duration_s) + 8))
    onsets = _first_onset(rng, duration_s) + np.concatenate([[0.0], gaps])
    return _hits(n, sample_rate, onsets, rng.uniform(0.4, 1.0, onsets.size), kernel)


def buzz(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A harsh buzz: a bright pulse wave at 100-300 Hz with a wobble in pitch and level."""
    n = num_samples(duration_s, sample_rate)
    wobble = 1 + 0.03 * (_smooth_random(rng, n, sample_rate, 4) - 0.5)
    freq = _log_uniform(rng, 100, 300) * wobble
    level = 0.6 + 0.4 * _smooth_random(rng, n, sample_rate, 6)
    return _tone(freq, n, sample_rate, rng, [1.0] * 20) * level


def hum(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A soft, low hum: 80-250 Hz with a few weak harmonics and a gentle 4-6 Hz vibrato."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    freq = _log_uniform(rng, 80, 250) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 6) * t))
    return _tone(freq, n, sample_rate, rng, (1.0, 0.4, 0.2, 0.1))


# -- Channel, environment and background -------------------------------------------------------------------
def noise(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Generic noise: red/brown noise (spectral slope 1/f^1.6 to 1/f^2.4)."""
    return colored_noise(rng, num_samples(duration_s, sample_rate), rng.uniform(1.6, 2.4))


def white_noise(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Flat-spectrum noise."""
    return colored_noise(rng, num_samples(duration_s, sample_rate), rng.uniform(-0.1, 0.1))


def pink_noise(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """1/f noise."""
    return colored_noise(rng, num_samples(duration_s, sample_rate), rng.uniform(0.9, 1.1))


def throbbing(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Low rumbling noise pulsating strongly at 1-5 Hz."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    body = _band_noise(rng, n, sample_rate, 30, rng.uniform(200, 800))
    return body * np.sin(np.pi * rng.uniform(1, 5) * t + rng.uniform(0, np.pi)) ** 4


def mains_hum(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Electrical hum: exactly 50 or 60 Hz with strong harmonics, perfectly steady."""
    n = num_samples(duration_s, sample_rate)
    amps = rng.uniform(0.1, 1.0, 10) * np.array([1.0, 0.8, 1.0, 0.5, 0.6, 0.3, 0.4, 0.2, 0.3, 0.15])
    return _tone(float(rng.choice([50.0, 60.0])), n, sample_rate, rng, amps)


def static(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Radio static: a crackle of random impulses of heavy-tailed size over a faint hiss, in bursts."""
    n = num_samples(duration_s, sample_rate)
    density = rng.uniform(30, 300) / sample_rate * (0.3 + _smooth_random(rng, n, sample_rate, 3))
    crackle = (rng.random(n) < density) * rng.pareto(2.5, n) * rng.choice([-1.0, 1.0], n)
    hiss = _band_noise(rng, n, sample_rate, 2000, 0.5 * sample_rate)
    return crackle / (np.max(np.abs(crackle)) + 1e-12) + 0.05 * hiss


# -- Music: percussion ------------------------------------------------------------------------------------
def _membrane(sample_rate: int, rng: np.random.Generator, f0: float, drop: float, decay_s: float) -> np.ndarray:
    """A drum stroke: a sine gliding down from drop x f0 to f0, plus a short noise attack."""
    n = int(5 * decay_s * sample_rate)
    t = _times(n, sample_rate)
    freq = f0 * (1 + (drop - 1) * np.exp(-t / 0.02))
    body = np.sin(np.cumsum(2 * np.pi * freq / sample_rate)) * np.exp(-t / decay_s)
    return body + 0.3 * rng.standard_normal(n) * np.exp(-t / 0.004)


def _beat_onsets(rng: np.random.Generator, duration_s: float, keep_probability: float) -> np.ndarray:
    """Onsets on a 80-160 BPM grid; each beat played with `keep_probability`."""
    onsets = _regular_onsets(rng, duration_s, 60.0 / rng.uniform(80, 160), jitter_s=0.004)
    keep = rng.random(onsets.size) < keep_probability
    keep[: min(1, keep.size)] = True  # never an empty bar
    return onsets[keep]


def drum(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A tuned hand drum / tom (100-250 Hz, 0.1-0.3 s decay) played on a beat grid."""
    n = num_samples(duration_s, sample_rate)
    kernel = _membrane(sample_rate, rng, _log_uniform(rng, 100, 250), 1.4, rng.uniform(0.1, 0.3))
    onsets = _beat_onsets(rng, duration_s, 0.8)
    return _hits(n, sample_rate, onsets, rng.uniform(0.6, 1.0, onsets.size), kernel)


def bass_drum(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A kick drum: a 45-70 Hz thump with a fast downward pitch glide."""
    n = num_samples(duration_s, sample_rate)
    kernel = _membrane(sample_rate, rng, rng.uniform(45, 70), rng.uniform(2, 3), rng.uniform(0.15, 0.35))
    onsets = _beat_onsets(rng, duration_s, 0.9)
    return _hits(n, sample_rate, onsets, rng.uniform(0.8, 1.0, onsets.size), kernel)


def snare_drum(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A snare: a short 180-250 Hz body plus a rattling band of noise from the snares."""
    n = num_samples(duration_s, sample_rate)
    length = int(0.4 * sample_rate)
    t = _times(length, sample_rate)
    kernel = _band_noise(rng, length, sample_rate, 1000, 0.45 * sample_rate) * np.exp(-t / rng.uniform(0.06, 0.15))
    body = _membrane(sample_rate, rng, rng.uniform(180, 250), 1.2, 0.05)[:length]
    kernel[: body.size] += 0.6 * body
    onsets = _beat_onsets(rng, duration_s, 0.6)
    return _hits(n, sample_rate, onsets, rng.uniform(0.6, 1.0, onsets.size), kernel)


def _metal(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Metallic noise: six detuned square waves at inharmonic ratios, high-passed (the classic 808 recipe)."""
    base = rng.uniform(250, 350)
    ratios = (2.0, 3.0, 4.16, 5.43, 6.79, 8.21)
    raw = sum(np.sign(np.sin(_phase(base * r, n, sample_rate, rng))) for r in ratios)
    spectrum = np.fft.rfft(raw + 0.5 * rng.standard_normal(n))
    spectrum[np.fft.rfftfreq(n, 1.0 / sample_rate) < 3000] = 0.0
    return np.fft.irfft(spectrum, n)


def cymbal(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Crash/ride cymbal: bright metallic noise with a 0.6-2 s decay, struck once or twice."""
    n = num_samples(duration_s, sample_rate)
    length = int(2.5 * sample_rate)
    kernel = _metal(rng, length, sample_rate) * np.exp(-_times(length, sample_rate) / rng.uniform(0.6, 2.0))
    onsets = np.sort(rng.uniform(0, max(duration_s - 0.5, 0.0), rng.integers(1, 3)))
    return _hits(n, sample_rate, onsets, rng.uniform(0.7, 1.0, onsets.size), kernel)


def hi_hat(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Closed hi-hat: the same metallic noise as a cymbal, choked after 30-80 ms, on eighth notes."""
    n = num_samples(duration_s, sample_rate)
    length = int(0.3 * sample_rate)
    kernel = _metal(rng, length, sample_rate) * np.exp(-_times(length, sample_rate) / rng.uniform(0.015, 0.04))
    onsets = _regular_onsets(rng, duration_s, 30.0 / rng.uniform(80, 160), jitter_s=0.003)
    return _hits(n, sample_rate, onsets, rng.uniform(0.5, 1.0, onsets.size), kernel)


# -- Human sounds ------------------------------------------------------------------------------------------
def _heartbeat(rng: np.random.Generator, n: int, sample_rate: int, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Lub-dub thumps at 55-100 BPM; returns the signal and the beat onsets."""
    lub = _decaying(int(0.2 * sample_rate), sample_rate, [rng.uniform(40, 60), 90.0], [1.0, 0.4], 0.04)
    dub = _decaying(int(0.2 * sample_rate), sample_rate, [rng.uniform(60, 90), 140.0], [1.0, 0.3], 0.03)
    onsets = _regular_onsets(rng, duration_s, 60.0 / rng.uniform(55, 100), jitter_s=0.01)
    split = rng.uniform(0.28, 0.36)
    beats = _hits(n, sample_rate, onsets, np.ones(onsets.size), lub)
    return beats + _hits(n, sample_rate, onsets + split, np.full(onsets.size, 0.7), dub), onsets


def heartbeat(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Heart sounds: low "lub-dub" thumps."""
    n = num_samples(duration_s, sample_rate)
    return _heartbeat(rng, n, sample_rate, duration_s)[0]


def heart_murmur(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A heartbeat with a whooshing band of noise between "lub" and "dub" (a systolic murmur)."""
    n = num_samples(duration_s, sample_rate)
    beats, onsets = _heartbeat(rng, n, sample_rate, duration_s)
    t = _times(n, sample_rate)
    last = np.searchsorted(onsets, t, side="right") - 1
    since = t - onsets[np.maximum(last, 0)] if onsets.size else np.full(n, -1.0)
    inside = (last >= 0) & (since > 0.06) & (since < 0.28)
    whoosh = _band_noise(rng, n, sample_rate, 100, rng.uniform(400, 700)) * inside
    return beats + rng.uniform(0.15, 0.35) * whoosh


def clapping(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Hand claps: 1-3 kHz noise bursts of ~30 ms, each a few micro-slaps, at a steady 2-5 per second."""
    n = num_samples(duration_s, sample_rate)
    length = int(0.08 * sample_rate)
    t = _times(length, sample_rate)
    burst = _band_noise(rng, length, sample_rate, 700, 3500)
    kernel = sum(burst * np.exp(-np.maximum(t - d, 0) / 0.02) * (t >= d) for d in (0.0, 0.004, 0.009))
    onsets = _regular_onsets(rng, duration_s, 1.0 / rng.uniform(2, 5), jitter_s=0.01)
    return _hits(n, sample_rate, onsets, rng.uniform(0.7, 1.0, onsets.size), kernel)


# -- Natural sounds --------------------------------------------------------------------------------------
def rain(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Rain: hundreds of tiny droplet blips per second over a soft wash of high noise."""
    n = num_samples(duration_s, sample_rate)
    pitch = min(rng.uniform(2500, 5000), 0.4 * sample_rate)
    drop = _decaying(int(0.01 * sample_rate), sample_rate, [pitch], [1.0], 0.0015)
    count = int(rng.uniform(200, 1500) * duration_s)
    drops = _hits(n, sample_rate, rng.uniform(0, duration_s, count), rng.uniform(0.1, 1.0, count), drop)
    wash = _band_noise(rng, n, sample_rate, 800, 0.45 * sample_rate)
    return drops / (np.max(np.abs(drops)) + 1e-12) + rng.uniform(0.05, 0.15) * wash


def wind(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Wind: low roaring noise swelling in slow gusts, with a gust-dependent brighter band."""
    n = num_samples(duration_s, sample_rate)
    gust = _smooth_random(rng, n, sample_rate, rng.uniform(0.5, 2))
    low = _band_noise(rng, n, sample_rate, 20, rng.uniform(300, 600))
    high = _band_noise(rng, n, sample_rate, 500, 1500)
    return (0.3 + gust) * low + 0.3 * gust**2 * high


def waves(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Surf: broadband noise in 4-9 s swells, a fast crash followed by a long hissing wash."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    phase = np.mod(t / rng.uniform(4, 9) + rng.uniform(0, 1), 1.0)
    swell = np.where(phase < 0.15, phase / 0.15, np.exp(-(phase - 0.15) * 4))
    return colored_noise(rng, n, rng.uniform(0.6, 1.2)) * (0.1 + swell)


# -- Animal ----------------------------------------------------------------------------------------------
def insect(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """A flying insect: a 300-700 Hz wingbeat drone that wanders in pitch and level as it flies past."""
    n = num_samples(duration_s, sample_rate)
    wander = 1 + 0.08 * (_smooth_random(rng, n, sample_rate, 2) - 0.5)
    level = 0.2 + _smooth_random(rng, n, sample_rate, 1)
    return _tone(_log_uniform(rng, 300, 700) * wander, n, sample_rate, rng, _sawtooth_amps(8, 0.8)) * level


def cricket(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """Field cricket: chirps of 3-5 pulses (~20 ms, 25-40 per second) of a 3.5-5 kHz carrier."""
    n = num_samples(duration_s, sample_rate)
    t = _times(n, sample_rate)
    carrier = min(rng.uniform(3500, 5000), 0.4 * sample_rate)
    syllable_period = 1.0 / rng.uniform(25, 40)
    chirp_period = rng.uniform(0.3, 0.8)
    in_chirp = np.mod(t, chirp_period)
    gate = _gate(in_chirp, 0.6 * syllable_period, syllable_period, 0.0, 0.003)
    gate *= in_chirp < rng.integers(3, 6) * syllable_period
    return _tone(carrier, n, sample_rate, rng, (1.0, 0.1)) * gate


# -- Speech (optional, espeak-ng) ------------------------------------------------------------------------
def speech_available() -> bool:
    """Whether the `espeak-ng` program is on PATH, so that the speech classes can be synthesised."""
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=8)
def _speech_bank(speech_class: str, sample_rate: int) -> tuple[np.ndarray, ...]:
    """Every sentence in every voice of `speech_class`, rendered once by espeak-ng and resampled."""
    import soundfile as sf
    import soxr

    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError("espeak-ng is not on PATH: the speech classes are not available.")
    bank = []
    with tempfile.TemporaryDirectory() as tmp:
        for v, (voice, pitch) in enumerate(_VOICES[speech_class]):
            for s, text in enumerate(_SPEECH_TEXTS):
                wav = Path(tmp) / f"{v}_{s}.wav"
                command = [program, "-v", voice, "-p", str(pitch), "-s", "160", "-w", str(wav), text]
                subprocess.run(command, check=True, capture_output=True, timeout=60)
                audio, rate = sf.read(str(wav), dtype="float64", always_2d=True)
                audio = audio.mean(axis=1)
                bank.append(soxr.resample(audio, rate, sample_rate) if rate != sample_rate else audio)
    return tuple(bank)


def _speech(speech_class: str) -> Synth:
    def synth(rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
        """Sentences from the espeak-ng bank of this class, back to back with short pauses, from a random start."""
        n = num_samples(duration_s, sample_rate)
        bank = _speech_bank(speech_class, sample_rate)
        pieces, total = [], 0
        while total < n + 2 * sample_rate:
            piece = np.concatenate([bank[rng.integers(len(bank))], np.zeros(int(rng.uniform(0.1, 0.5) * sample_rate))])
            pieces.append(piece)
            total += piece.size
        stream = np.concatenate(pieces)
        start = int(rng.integers(0, stream.size - n + 1))
        return stream[start : start + n]

    synth.__name__ = f"speech_{speech_class.split(',')[0].lower().replace(' ', '_')}"
    return synth


# -- registry --------------------------------------------------------------------------------------------
SOUND_CLASSES: dict[str, Synth] = {
    # Sounds of things
    "Alarm": alarm,
    "Siren": siren,
    "Civil defense siren": civil_defense_siren,
    "Police car (siren)": police_siren,
    "Ambulance (siren)": ambulance_siren,
    "Fire engine, fire truck (siren)": fire_engine_siren,
    "Smoke detector, smoke alarm": smoke_detector,
    "Alarm clock": alarm_clock,
    "Telephone": telephone,
    "Dial tone": dial_tone,
    "Busy signal": busy_signal,
    "Ringtone": ringtone,
    "Telephone bell ringing": telephone_bell,
    "Telephone dialing, DTMF": dtmf,
    "Tick": tick,
    "Tick-tock": tick_tock,
    "Tuning fork": tuning_fork,
    # Source-ambiguous sounds
    "Sine wave": sine_wave,
    "Chirp tone": chirp_tone,
    "Harmonic": harmonic,
    "Beep, bleep": beep,
    "Ding": ding,
    "Pulse": pulse,
    "Clicking": clicking,
    "Buzz": buzz,
    "Hum": hum,
    # Channel, environment and background
    "Noise": noise,
    "White noise": white_noise,
    "Pink noise": pink_noise,
    "Throbbing": throbbing,
    "Mains hum": mains_hum,
    "Static": static,
    # Music
    "Drum": drum,
    "Bass drum": bass_drum,
    "Snare drum": snare_drum,
    "Cymbal": cymbal,
    "Hi-hat": hi_hat,
    # Human sounds
    "Heart sounds, heartbeat": heartbeat,
    "Heart murmur": heart_murmur,
    "Clapping": clapping,
    # Natural sounds
    "Rain": rain,
    "Wind": wind,
    "Waves, surf": waves,
    # Animal
    "Insect": insect,
    "Cricket": cricket,
}
SPEECH_SYNTHS: dict[str, Synth] = {name: _speech(name) for name in SPEECH_CLASSES}


def available_classes(speech: bool | None = None) -> list[str]:
    """Names of the classes that can be synthesised here, registry order.

    `speech`: None adds the speech classes when espeak-ng is on PATH; True requires them (RuntimeError when
    espeak-ng is missing); False leaves them out.
    """
    if speech and not speech_available():
        raise RuntimeError("speech=True but espeak-ng is not on PATH; install it or pass speech=False/None.")
    with_speech = speech_available() if speech is None else speech
    return list(SOUND_CLASSES) + (list(SPEECH_CLASSES) if with_speech else [])


def synthesize(name: str, rng: np.random.Generator, duration_s: float, sample_rate: int) -> np.ndarray:
    """One sound of class `name`: float32, `round(duration_s * sample_rate)` samples, peak exactly 1 (or silent).

    Peak normalisation makes every class comparable before the mixer sets levels.
    """
    synth = SOUND_CLASSES.get(name) or SPEECH_SYNTHS.get(name)
    if synth is None:
        raise KeyError(f"No demo synthesiser for {name!r}; known: {available_classes(speech=False)}")
    if duration_s <= 0 or sample_rate <= 0:
        raise ValueError(f"duration_s and sample_rate must be positive, got {duration_s} and {sample_rate}.")
    audio = np.asarray(synth(rng, duration_s, sample_rate), dtype=np.float64)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if not np.isfinite(peak):
        raise FloatingPointError(f"The synthesiser of {name!r} produced a non-finite sample.")
    return (audio / peak if peak > 0 else audio).astype(np.float32)
