"""SPAFeatureExtractor: resampling, mono mix-down, padding and masks, validation, save/load."""

import tempfile

import numpy as np
import pytest
import torch
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from modeling_spa.feature_extraction_spa import SPAFeatureExtractor
from modeling_spa.frontend import LogMelFrontend, frontend_preset


def sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_frequency(clip: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(clip * np.hanning(len(clip))))
    return float(np.fft.rfftfreq(len(clip), 1 / rate)[spectrum.argmax()])


def test_resampling_keeps_frequency_and_duration():
    extractor = SPAFeatureExtractor(sampling_rate=32000, max_length_s=None)
    clip = sine(1000.0, 2.0, 44100)
    out = extractor(clip, sampling_rate=44100, return_tensors="np")
    values = out["input_values"][0]
    assert values.dtype == np.float32
    assert len(values) == 64000  # 2 s at 32 kHz: the 44100 / 32000 length ratio
    assert abs(peak_frequency(values, 32000) - 1000.0) <= 0.5  # FFT bins are 0.5 Hz wide
    # A 13 kHz tone survives 44.1 -> 32 kHz (below the new Nyquist) at its amplitude.
    high = extractor(sine(13000.0, 1.0, 44100), sampling_rate=44100)["input_values"][0]
    assert abs(peak_frequency(high, 32000) - 13000.0) <= 1.0
    assert abs(np.abs(high[1000:-1000]).max() - 0.5) < 0.01


def test_upsampling_and_model_rate_pass_through():
    extractor = SPAFeatureExtractor(sampling_rate=32000, max_length_s=None)
    up = extractor(sine(440.0, 1.0, 16000), sampling_rate=16000)["input_values"][0]
    assert len(up) == 32000 and abs(peak_frequency(up, 32000) - 440.0) <= 1.0
    clip = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    same = extractor(clip, sampling_rate=32000)["input_values"][0]
    np.testing.assert_array_equal(same, clip)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "torch"])
def test_a_2d_list_element_is_one_multichannel_clip(layout):
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((2, 8000)).astype(np.float32)
    stereo = np.stack([left, right], axis=1) if layout == "channels_last" else np.stack([left, right])
    stereo = torch.from_numpy(stereo) if layout == "torch" else stereo
    mono = rng.standard_normal(3000).astype(np.float32)
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)
    out = extractor([stereo, mono], sampling_rate=16000, return_tensors="np")
    assert out["input_values"].shape == (2, 8000)
    np.testing.assert_allclose(out["input_values"][0], (left + right) / 2, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["input_values"][1, :3000], mono)
    assert out["attention_mask"].sum(axis=1).tolist() == [8000, 3000]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_a_2d_array_is_a_batch_of_mono_clips(kind):
    # As in every transformers audio extractor: np.stack of two clips is two clips, not one averaged stereo clip.
    rng = np.random.default_rng(4)
    clips = rng.standard_normal((2, 5000)).astype(np.float32)
    batch = torch.from_numpy(clips) if kind == "torch" else clips
    out = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)(batch, sampling_rate=16000, return_tensors="np")
    assert out["input_values"].shape == (2, 5000)
    np.testing.assert_array_equal(out["input_values"], clips)
    assert out["attention_mask"].all()
    # Two rows are no stereo clip even when short: (2, samples) is a batch of two.
    few = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)(clips[:, :6], sampling_rate=16000)
    np.testing.assert_array_equal(few["input_values"], clips[:, :6])
    # soundfile's (samples, channels) of one stereo clip, passed without the list: an error, not 5000 clips.
    with pytest.raises(ValueError, match="5000 clips of 2 samples.*\\[clip\\]"):
        SPAFeatureExtractor()(batch.T, sampling_rate=16000)


def test_batch_of_unequal_clips_is_padded_and_masked():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0, padding_value=0.0)
    clips = [np.full(16000, 0.5, np.float32), np.full(4000, -0.25, np.float32), np.full((2, 100), 0.1, np.float32)]
    out = extractor(clips, sampling_rate=16000, return_tensors="np")
    values, mask = out["input_values"], out["attention_mask"]
    assert values.shape == mask.shape == (3, 16000)
    assert mask.sum(axis=1).tolist() == [16000, 4000, 100]
    assert (values[1, :4000] == -0.25).all() and (values[1, 4000:] == 0).all()
    assert np.allclose(values[2, :100], 0.1) and (values[2, 100:] == 0).all()
    assert (mask[1, :4000] == 1).all() and (mask[1, 4000:] == 0).all()
    longest = extractor(clips[1:], sampling_rate=16000, padding="longest", return_tensors="np")
    assert longest["input_values"].shape == (2, 4000)
    assert longest["attention_mask"].sum(axis=1).tolist() == [4000, 100]


def test_clips_are_kept_whole_by_default_and_truncation_crops_from_the_start():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=0.5)
    clip = np.arange(12000, dtype=np.float32) / 12000
    # The default keeps every sample (the model windows long clips) and still pads short ones to max_length_s.
    kept = extractor([clip, clip[:100]], sampling_rate=16000, return_tensors="np")
    assert kept["input_values"].shape == (2, 12000)
    np.testing.assert_array_equal(kept["input_values"][0], clip)
    assert kept["attention_mask"].sum(axis=1).tolist() == [12000, 100]
    assert extractor(clip[:100], sampling_rate=16000)["input_values"].shape == (1, 8000)
    out = extractor([clip], sampling_rate=16000, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(out["input_values"][0], clip[:8000])
    assert out["attention_mask"].all()
    samples = extractor([clip], sampling_rate=16000, max_length=300, truncation=True, return_tensors="np")
    assert samples["input_values"].shape == (1, 300)
    with pytest.raises(ValueError, match="truncation=True needs a length"):
        SPAFeatureExtractor(max_length_s=None)(clip, sampling_rate=32000, truncation=True)


def test_pad_to_multiple_of():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=0.01)  # 160 samples
    clips = [np.ones(100, np.float32), np.ones(30, np.float32)]
    out = extractor(clips, sampling_rate=16000, pad_to_multiple_of=64, return_tensors="np")
    assert out["input_values"].shape == (2, 192)  # 160 rounded up
    assert out["attention_mask"].sum(axis=1).tolist() == [100, 30]
    assert (out["input_values"][0, 100:] == 0).all()
    longest = extractor(clips, sampling_rate=16000, padding="longest", pad_to_multiple_of=64)
    assert longest["input_values"].shape == (2, 128)
    long_clip = np.ones(1000, np.float32)
    assert extractor(long_clip, sampling_rate=16000, pad_to_multiple_of=64)["input_values"].shape == (1, 1024)
    # The truncation length is rounded up too (SequenceFeatureExtractor._truncate), and no padding means none.
    cropped = extractor(long_clip, sampling_rate=16000, truncation=True, pad_to_multiple_of=64)
    assert cropped["input_values"].shape == (1, 192) and cropped["attention_mask"].sum() == 192
    unpadded = extractor(clips, sampling_rate=16000, padding=False, pad_to_multiple_of=64)
    assert [len(v) for v in unpadded["input_values"]] == [100, 30]
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        extractor(clips, sampling_rate=16000, pad_to_multiple_of=0)


def test_do_not_pad_returns_each_clip():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)
    out = extractor([np.ones(10), np.ones(20)], sampling_rate=16000, padding=False)
    assert [len(v) for v in out["input_values"]] == [10, 20]
    with pytest.raises(ValueError, match="different lengths"):
        extractor([np.ones(10), np.ones(20)], sampling_rate=16000, padding=False, return_tensors="pt")


def test_torch_input_gives_torch_output_equal_to_numpy():
    extractor = SPAFeatureExtractor(sampling_rate=32000, max_length_s=0.5)
    clips = [torch.randn(22050, dtype=torch.float64), torch.randn(2, 11025).bfloat16()]
    out = extractor(clips, sampling_rate=44100)
    assert isinstance(out["input_values"], torch.Tensor) and out["input_values"].dtype == torch.float32
    assert out["input_values"].shape == (2, 16000)
    as_numpy = extractor([clip.float().numpy() for clip in clips], sampling_rate=44100, return_tensors="np")
    np.testing.assert_allclose(out["input_values"].numpy(), as_numpy["input_values"], rtol=0, atol=1e-6)
    assert out["attention_mask"].sum(dim=1).tolist() == [16000, 8000]


def test_int16_pcm_is_scaled():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)
    values = extractor(np.array([-32768, 0, 16384, 32767], dtype=np.int16), sampling_rate=16000)["input_values"]
    np.testing.assert_allclose(values[0], [-1.0, 0.0, 0.5, 32767 / 32768])
    int32 = extractor(np.array([[-(2**31), 2**30]], dtype=np.int32), sampling_rate=16000)["input_values"]
    np.testing.assert_allclose(int32, [[-1.0, 0.5]])


def test_python_numbers_are_float_samples():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)
    values = extractor([0, 1, -1, 2, 3], sampling_rate=16000)["input_values"]
    np.testing.assert_array_equal(values, [[0.0, 1.0, -1.0, 2.0, 3.0]])
    batch = extractor([[1, 0, -1], [0.5, 2]], sampling_rate=16000)
    np.testing.assert_array_equal(batch["input_values"], [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    assert batch["attention_mask"].sum(axis=1).tolist() == [3, 2]
    # int64 arrays and tensors (np.array([1, 2]), torch.tensor([1, 2])) are no PCM format: an error, not silence.
    for clip in (np.array([0, 1, -1]), torch.tensor([0, 1, -1])):
        with pytest.raises(ValueError, match="Clip 0 has dtype int64, which is no PCM format"):
            extractor(clip, sampling_rate=16000)


def test_save_and_load_round_trip():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=4.5, padding_value=0.25)
    with tempfile.TemporaryDirectory() as directory:
        extractor.save_pretrained(directory)
        loaded = SPAFeatureExtractor.from_pretrained(directory)
    assert loaded.to_dict() == extractor.to_dict()
    assert (loaded.sampling_rate, loaded.max_length_s, loaded.padding_value) == (16000, 4.5, 0.25)
    assert loaded.feature_size == 1 and loaded.return_attention_mask is True
    clip = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(
        loaded(clip, sampling_rate=16000)["input_values"], extractor(clip, sampling_rate=16000)["input_values"]
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_clip(bad):
    clips = [np.zeros(100, np.float32), np.zeros(100, np.float32), np.zeros(100, np.float32)]
    clips[2][50] = bad
    with pytest.raises(ValueError, match="Clip 2 contains NaN or infinite"):
        SPAFeatureExtractor()(clips, sampling_rate=32000)


def test_empty_and_ambiguous_inputs_are_rejected():
    extractor = SPAFeatureExtractor()
    with pytest.raises(ValueError, match="Clip 1 is empty"):
        extractor([np.zeros(10), np.zeros(0)], sampling_rate=32000)
    with pytest.raises(ValueError, match="empty"):
        extractor([], sampling_rate=32000)
    with pytest.raises(ValueError, match="Clip 1 has shape \\(16, 1000\\).*at most 8 channels"):
        extractor([np.zeros(1000), np.zeros((16, 1000))], sampling_rate=32000)
    with pytest.raises(ValueError, match="shape \\(2, 2, 1000\\).*list of \\(channels, samples\\) arrays"):
        extractor(np.zeros((2, 2, 1000)), sampling_rate=32000)
    with pytest.raises(ValueError, match="sampling_rate must be positive"):
        extractor(np.zeros(10), sampling_rate=0)


def test_missing_sampling_rate_warns_and_assumes_the_model_rate():
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=None)
    logger = logging.get_logger("modeling_spa.feature_extraction_spa")
    with CaptureLogger(logger) as captured:
        values = extractor(np.ones(123, np.float32))["input_values"]
    assert "sampling_rate" in captured.out
    assert values.shape == (1, 123)


def test_extractor_output_feeds_the_frontend():
    """44.1 kHz stereo clips of unequal length, through the extractor and the AST front-end: masks line up."""
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=10.0)
    clips = [np.stack([sine(440.0, 3.0, 44100)] * 2), sine(1000.0, 12.0, 44100)]
    batch = extractor(clips, sampling_rate=44100, truncation=True, return_tensors="pt")
    features, frame_mask = LogMelFrontend(**frontend_preset("ast"))(batch["input_values"], batch["attention_mask"])
    assert features.shape == (2, 1024, 128)
    assert frame_mask.sum(dim=1).tolist() == [1 + (48000 - 400) // 160, 1 + (160000 - 400) // 160]
