"""The in-model log-mel front-end against the public extractors it replaces, and its batching and buffer handling."""

import copy
import io
import json
import math
import tempfile

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor, ClapFeatureExtractor, PreTrainedConfig, PreTrainedModel
from transformers.audio_utils import hertz_to_mel, mel_filter_bank, mel_to_hertz, spectrogram, window_function

from modeling_spa.frontend import FRONTEND_PRESETS, LogMelFrontend, frontend_preset

# The log-mel presets (`LogMelFrontend`); the other kinds (transformers' speech encoders' front-ends, which name a
# "kind") are tested against their feature extractors in tests/backbones/test_backbone_hub.py.
PRESETS = sorted(name for name, preset in FRONTEND_PRESETS.items() if "kind" not in preset)
# transformers warns about the empty lowest band of the AST recipe each time it builds an ASTFeatureExtractor.
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")


def noisy_sine(seconds: float, sampling_rate: int, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sampling_rate)) / sampling_rate
    return (0.1 * rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def frontend(name: str, **overrides) -> LogMelFrontend:
    return LogMelFrontend(**{**frontend_preset(name), **overrides})


def padded_batch(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(clip) for clip in clips)
    values = torch.zeros(len(clips), length)
    mask = torch.zeros(len(clips), length, dtype=torch.int32)
    for row, clip in enumerate(clips):
        values[row, : len(clip)] = torch.from_numpy(clip)
        mask[row, : len(clip)] = 1
    return values, mask


def assert_close_to_ast(features: np.ndarray, expected: np.ndarray) -> None:
    """float32 FFT against AST's float64 numpy: ~1e-7 on average; up to a few 1e-4 (normalised) in the rare
    low-frequency bins whose power dips to ~1e-7 of the frame's, at the float32 FFT noise floor."""
    difference = np.abs(features - expected)
    assert difference.max() < 1e-3, difference.max()
    assert difference.mean() < 1e-6, difference.mean()


def test_presets_are_plain_json_and_copied():
    for name in PRESETS:
        preset = frontend_preset(name)
        assert json.loads(json.dumps(preset)) == preset
        LogMelFrontend(**json.loads(json.dumps(preset)))
    preset = frontend_preset("ast")
    preset["n_mels"] = 3
    assert FRONTEND_PRESETS["ast"]["n_mels"] == 128


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="'pann'.*ast, cnn14, htsat, passt, passt_hop100, passt_hop160, psla, tiny"):
        frontend_preset("pann")


def test_buffers_stay_out_of_the_state_dict():
    module = frontend("passt")
    assert dict(module.state_dict()) == {}
    assert module.window.dtype == torch.float32 and module.mel_filters.shape == (513, 128)


@pytest.mark.parametrize("seconds", [3.0, 10.0, 12.5])
def test_ast_matches_ast_feature_extractor(seconds):
    clip = noisy_sine(seconds, 16000, seed=int(seconds))
    expected = ASTFeatureExtractor()(clip, sampling_rate=16000, return_tensors="np")["input_values"]
    features, frame_mask = frontend("ast")(torch.from_numpy(clip)[None])
    assert features.shape == expected.shape == (1, 1024, 128)
    assert_close_to_ast(features.numpy(), expected)
    assert int(frame_mask.sum()) == min(1024, 1 + (len(clip) - 400) // 160)


def test_ast_padded_batch_matches_ast_feature_extractor_per_clip():
    # The SPA extractor pads waveforms to 10 s; masked frames must come out as AST pads its fbank (0, normalised).
    clips = [
        noisy_sine(s, 16000, frequency=f, seed=i)
        for i, (s, f) in enumerate([(3.0, 300.0), (10.0, 2500.0), (0.5, 80.0)])
    ]
    values, mask = padded_batch(clips)
    features, frame_mask = frontend("ast")(values, mask)
    expected = ASTFeatureExtractor()(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    assert_close_to_ast(features.numpy(), expected)
    assert frame_mask.sum(dim=1).tolist() == [298, 998, 48]


def test_htsat_matches_clap_feature_extractor():
    clip = noisy_sine(10.0, 48000, frequency=3000.0)
    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc")
    expected = extractor(clip, sampling_rate=48000, return_tensors="np")["input_features"][:, 0]
    features, _ = frontend("htsat")(torch.from_numpy(clip)[None])
    assert features.shape == expected.shape == (1, 1001, 64)
    # dB: 4.34 times the natural-log error.
    np.testing.assert_allclose(features.numpy(), expected, rtol=0, atol=2e-3)


def test_cnn14_matches_librosa_style_numpy_spectrogram():
    clip = noisy_sine(2.0, 32000, frequency=1000.0)
    filters = mel_filter_bank(513, 64, 50, 14000, 32000, norm="slaney", mel_scale="slaney")
    expected = spectrogram(
        clip, window_function(1024, "hann"), 1024, 320, power=2.0, mel_filters=filters, log_mel="dB"
    ).T
    features, _ = frontend("cnn14")(torch.from_numpy(clip)[None])
    assert features.shape == (1, 201, 64)
    np.testing.assert_allclose(features[0].numpy(), expected, rtol=0, atol=2e-3)


def test_passt_matches_augment_mel_stft_recipe():
    """PaSST's AugmentMelSTFT in eval mode, written with torch.stft (no torchaudio)."""
    clip = torch.from_numpy(noisy_sine(3.0, 32000, frequency=5000.0))[None].double()
    emphasised = torch.nn.functional.conv1d(clip[:, None], torch.tensor([[[-0.97, 1.0]]], dtype=torch.float64))[:, 0]
    stft = torch.stft(
        emphasised,
        1024,
        hop_length=320,
        win_length=800,
        window=torch.hann_window(800, periodic=False, dtype=torch.float64),
        center=True,
        return_complex=True,
    )
    banks = mel_filter_bank(513, 128, 0.0, 15000.0, 32000, mel_scale="kaldi", triangularize_in_mel_space=True)
    mel = torch.from_numpy(banks).T @ stft.abs().square()
    expected = (((mel + 1e-5).log() + 4.5) / 5.0).transpose(1, 2)
    features, frame_mask = frontend("passt", max_frames=None)(clip.float())
    assert features.shape == expected.shape == (1, 1 + (96000 - 1) // 320, 128)
    np.testing.assert_allclose(features.numpy(), expected.numpy(), rtol=0, atol=1e-4)
    assert bool(frame_mask.all())


@pytest.mark.parametrize("name", PRESETS)
def test_sine_peaks_in_the_mel_band_centred_on_it(name):
    preset = frontend_preset(name)
    scale = preset["mel_scale"]
    low, high = hertz_to_mel(np.array([preset["f_min"], preset["f_max"]]), mel_scale=scale)
    band = preset["n_mels"] // 2
    centre = float(mel_to_hertz(np.linspace(low, high, preset["n_mels"] + 2), mel_scale=scale)[band + 1])
    rate = preset["sampling_rate"]
    t = np.arange(2 * rate) / rate
    clip = torch.from_numpy((0.5 * np.sin(2 * np.pi * centre * t)).astype(np.float32))[None]
    features, frame_mask = LogMelFrontend(**preset)(clip)
    profile = features[0][frame_mask[0]].mean(dim=0)
    assert int(profile.argmax()) == band, f"{centre:.1f} Hz peaks in band {int(profile.argmax())}, not {band}"


EXPECTED_FRAMES = {
    # preset: (frames of 10 s before max_frames, output frames)
    "passt": (1 + (320000 - 1) // 320, 1000),
    "passt_hop160": (1 + (320000 - 1) // 160, 2000),
    "passt_hop100": (1 + (320000 - 1) // 100, 3200),
    "ast": (1 + (160000 - 400) // 160, 1024),
    "psla": (1 + (160000 - 400) // 160, 1056),
    "cnn14": (1 + 320000 // 320, 1001),
    "htsat": (1 + 480000 // 480, 1001),
    "tiny": (1 + 160000 // 160, 1 + 160000 // 160),  # no max_frames: the demo CNN takes any length
}


@pytest.mark.parametrize("name", PRESETS)
def test_frame_count_per_preset(name):
    module = frontend(name)
    raw, output = EXPECTED_FRAMES[name]
    samples = 10 * module.sampling_rate
    assert module.num_frames(samples) == raw
    features, frame_mask = module(torch.randn(2, samples) * 0.1)
    assert features.shape == (2, output, module.n_mels)
    assert frame_mask.shape == (2, output)
    assert frame_mask.sum(dim=1).tolist() == [min(raw, output)] * 2


@pytest.mark.parametrize("name", PRESETS)
def test_batch_equals_per_clip(name):
    module = frontend(name, max_frames=None)
    rate = module.sampling_rate
    clips = torch.from_numpy(
        np.stack([noisy_sine(1.0, rate, frequency=f, seed=i) for i, f in enumerate([300, 900, 2000])])
    )
    batched, _ = module(clips)
    for row in range(len(clips)):
        single, _ = module(clips[row : row + 1])
        torch.testing.assert_close(batched[row], single[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_frame_mask_of_a_padded_batch(name):
    module = frontend(name, max_frames=None)
    rate = module.sampling_rate
    lengths = [rate, rate // 2, rate // 4 + 123]
    clips = [noisy_sine(n / rate, rate, seed=n) for n in lengths]
    values, mask = padded_batch(clips)
    features, frame_mask = module(values, mask)
    hop, window = module.hop_length, module.win_length
    shift = 1 if module.preemphasis and not module.preemphasis_per_frame else 0
    for row, length in enumerate(lengths):
        valid = 1 + (length - shift) // hop if module.center else 1 + (length - window) // hop
        assert frame_mask[row].tolist() == [t < valid for t in range(features.shape[1])]
        padding = (module.frame_padding_value - module.normalize_mean) / module.normalize_std
        assert torch.allclose(features[row, valid:], torch.tensor(padding))
        # Every frame of the clip is what the clip alone gives, its last centred frames too (they reach half an FFT
        # past its end, where the clip alone is reflected and the batch holds zeros).
        single, _ = module(torch.from_numpy(clips[row])[None])
        assert single.shape[1] == valid
        torch.testing.assert_close(features[row, :valid], single[0], rtol=0, atol=1e-4)


def test_max_frames_pads_and_crops():
    module = frontend("tiny", max_frames=50)
    long, long_mask = module(torch.randn(1, 16000))
    assert long.shape == (1, 50, 64) and bool(long_mask.all())
    full, _ = frontend("tiny", max_frames=None)(torch.randn(1, 16000))
    assert full.shape == (1, 101, 64)
    short, short_mask = frontend("tiny", max_frames=200)(torch.randn(1, 16000))
    assert short.shape == (1, 200, 64) and short_mask.sum() == 101
    assert torch.allclose(short[0, 101:], torch.tensor((math.log(1e-5) + 4.5) / 5))


def test_torch_compile_follows_new_batch_sizes_and_lengths():
    # The AST preset removes each frame's DC offset: inductor used to crash recompiling it for a second shape.
    module = frontend("ast", max_frames=None)
    compiled = torch.compile(module)
    for batch_size, seconds in ((2, 0.5), (3, 0.3)):
        clips = [noisy_sine(seconds - 0.05 * row, module.sampling_rate, seed=row) for row in range(batch_size)]
        values, mask = padded_batch(clips)
        features, frame_mask = compiled(values, mask)
        expected, expected_mask = module(values, mask)
        assert torch.equal(frame_mask, expected_mask)
        torch.testing.assert_close(features, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["ast", "passt"])
def test_bfloat16_under_autocast_gives_float32_features(name):
    module = frontend(name)
    clip = torch.from_numpy(noisy_sine(2.0, module.sampling_rate))[None]
    reference, _ = module(clip)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = module(clip.bfloat16())
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()
    # bfloat16 keeps 8 bits of each sample: a small error on the log-mel, not a broken one.
    assert (features - reference).abs().mean() < 0.02


def test_model_cast_to_bfloat16_keeps_float32_buffers():
    module = frontend("ast")
    clip = torch.from_numpy(noisy_sine(2.0, 16000))[None]
    reference, _ = module(clip)
    module.to(torch.bfloat16)
    features, _ = module(clip)
    assert module.mel_filters.dtype == torch.float32
    torch.testing.assert_close(features, reference, rtol=0, atol=1e-6)


def test_reset_buffers_after_meta_and_to_empty():
    module = frontend("ast")
    clip = torch.from_numpy(noisy_sine(2.0, 16000))[None]
    reference, _ = module(clip)
    module.to("meta")
    assert module.window.is_meta
    module.to_empty(device="cpu")  # what from_pretrained leaves: real storage, arbitrary values
    module.window.fill_(1e30)
    module.reset_buffers()
    assert not module.window.is_meta
    torch.testing.assert_close(module(clip)[0], reference, rtol=0, atol=0)


def test_forward_recomputes_buffers_replaced_behind_its_back():
    module = frontend("passt")
    clip = torch.from_numpy(noisy_sine(1.0, 32000))[None]
    reference, _ = module(clip)
    module.to("meta").to_empty(device="cpu")
    torch.testing.assert_close(module(clip)[0], reference, rtol=0, atol=0)
    module.window = torch.full_like(module.window, 7.0)  # a foreign tensor, whatever its memory address
    torch.testing.assert_close(module(clip)[0], reference, rtol=0, atol=0)
    with torch.device("meta"):
        lazy = frontend("passt")
    lazy.to("meta")
    torch.testing.assert_close(lazy(clip)[0], reference, rtol=0, atol=0)


def test_deepcopy_and_pickle_keep_working_buffers():
    module = frontend("tiny")
    clip = torch.from_numpy(noisy_sine(1.0, 16000))[None]
    reference, _ = module(clip)
    torch.testing.assert_close(copy.deepcopy(module)(clip)[0], reference, rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(restored(clip)[0], reference, rtol=0, atol=0)


class ProbeConfig(PreTrainedConfig):
    model_type = "spa_frontend_probe"

    def __init__(self, preset: str = "tiny", call_reset: bool = True, **kwargs):
        self.preset = preset
        self.call_reset = call_reset
        super().__init__(**kwargs)


class ProbeModel(PreTrainedModel):
    config_class = ProbeConfig
    main_input_name = "input_values"

    def __init__(self, config):
        super().__init__(config)
        self.frontend = LogMelFrontend(**frontend_preset(config.preset))
        self.head = torch.nn.Linear(self.frontend.n_mels, 2)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LogMelFrontend) and self.config.call_reset:
            module.reset_buffers()

    def forward(self, input_values, attention_mask=None):
        return self.frontend(input_values, attention_mask)[0]


@pytest.mark.parametrize("call_reset", [True, False])
def test_from_pretrained_restores_the_buffers(call_reset):
    model = ProbeModel(ProbeConfig(preset="ast", call_reset=call_reset)).eval()
    clip = torch.from_numpy(noisy_sine(2.0, 16000))[None]
    reference = model(clip)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        loaded = ProbeModel.from_pretrained(directory).eval()
    if call_reset:
        torch.testing.assert_close(loaded.frontend.window, model.frontend.window, rtol=0, atol=0)
    torch.testing.assert_close(loaded(clip), reference, rtol=0, atol=0)


def test_bad_inputs_and_settings():
    with pytest.raises(ValueError, match="batch, samples"):
        frontend("ast")(torch.zeros(16000))
    with pytest.raises(ValueError, match="shorter than one frame"):
        frontend("ast")(torch.zeros(1, 399))
    with pytest.raises(ValueError, match="too short"):
        frontend("passt")(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="Nyquist"):
        frontend("tiny", f_max=9000.0)
    with pytest.raises(TypeError):
        LogMelFrontend(**frontend_preset("tiny"), hop_size=10)


@pytest.mark.parametrize("name", PRESETS)
def test_garbage_amplitudes_give_finite_features(name):
    # Finite samples of 1e30 square to inf, and inf times a zero filter weight is NaN: one such clip in a batch
    # used to turn the whole loss into NaN.
    module = frontend(name)
    wave = torch.from_numpy(noisy_sine(0.5, module.sampling_rate)) * 1e30
    features, frame_mask = module(wave[None])
    assert torch.isfinite(features).all() and frame_mask.any()


@pytest.mark.parametrize("name", PRESETS)
def test_min_samples_is_one_full_window(name):
    module = frontend(name, max_frames=None)
    assert module.min_samples >= module.win_length
    short = torch.zeros(1, 4 * module.n_fft)
    mask = torch.zeros_like(short, dtype=torch.long)
    mask[:, : module.min_samples] = 1
    assert module(short, mask)[1].any()  # a clip of min_samples has at least one real frame
