"""Long clips: window positions, aggregation, streamed file windows, the model's windowed inference, spa-tag."""

import copy
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import tiny_ast_config
from transformers import pipeline

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.cli import tag as cli
from modeling_spa.data import decode_audio
from modeling_spa.frontend import LogMelFrontend, frontend_preset
from modeling_spa.tagging import files as tagging
from modeling_spa.windowing import WindowSettings, aggregate_logits, frontend_span, window_settings, window_starts

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RATE = 16000


# -- positions, spans, settings, aggregation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_samples", "window", "hop", "expected"),
    [
        (5, 10, 10, [0]),  # shorter than the window: one window
        (10, 10, 10, [0]),
        (25, 10, 10, [0, 10, 15]),  # the 5-sample tail is merged into a window aligned to the end
        (30, 10, 10, [0, 10, 20]),
        (31, 10, 10, [0, 10, 20, 21]),
        (27, 10, 5, [0, 5, 10, 15, 17]),
        (512160, 160000, 160000, [0, 160000, 320000, 352160]),  # 32.01 s at 16 kHz, 10 s windows
    ],
)
def test_window_starts(num_samples, window, hop, expected):
    assert window_starts(num_samples, window, hop) == expected


@pytest.mark.parametrize(("preset", "span"), [("ast", 164080), ("passt", 320000), ("htsat", 480479)])
def test_the_span_of_fixed_frames_is_the_longest_clip_they_hold(preset, span):
    frontend = frontend_preset(preset)
    assert frontend_span(frontend) == span
    module = LogMelFrontend(**frontend)
    frames = frontend["max_frames"]
    assert module.num_frames(span) == frames
    if frontend["center"]:
        assert module.num_frames(span + 1) == frames + 1
    else:  # Kaldi framing: the samples after the last whole frame would belong to no frame
        assert module.num_frames(span - 1) == frames - 1
    assert frontend_span(frontend_preset("tiny")) is None


def test_window_settings_defaults_and_validation():
    passt = window_settings(SPAConfig())  # the default backbone
    assert (passt.length, passt.hop, passt.aggregation) == (320000, 320000, "mean")  # PaSST: 1000 frames, 10 s
    ast = window_settings(SPAConfig(backbone="ast"))
    assert (ast.length, ast.hop, ast.aggregation) == (164080, 164080, "mean")  # AST: 1024 frames, 10.255 s
    cnn = SPAConfig(backbone="demo_cnn")
    assert window_settings(cnn).length == 160000  # any length: 10 s unless training recorded its clip length
    cnn = SPAConfig(backbone="demo_cnn", window_length_s=2.0, window_hop_s=0.5, window_aggregation="max")
    assert window_settings(cnn) == WindowSettings(32000, 8000, "max")
    assert window_settings(cnn, hop_s=1.0, aggregation="mean") == WindowSettings(32000, 16000, "mean")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        SPAConfig(backbone="demo_cnn", window_aggregation="median")
    with pytest.raises(ValueError, match="hop must be positive and at most the window"):
        SPAConfig(backbone="demo_cnn", window_length_s=1.0, window_hop_s=1.5)
    with pytest.raises(ValueError, match="more than the 164080 that the front-end's max_frames=1024 hold"):
        SPAConfig(backbone="ast", window_length_s=10.3)


def test_aggregation_by_hand():
    probabilities = torch.tensor([[0.2, 0.9, 0.5], [0.6, 0.1, 0.5], [0.8, 0.3, 0.5]], dtype=torch.float64)
    logits = torch.logit(probabilities).float()
    weights = [1.0, 1.0, 2.0]
    mean = aggregate_logits(logits, weights, "mean").sigmoid()
    expected = [(0.2 + 0.6 + 2 * 0.8) / 4, (0.9 + 0.1 + 2 * 0.3) / 4, 0.5]  # 0.6, 0.4, 0.5
    torch.testing.assert_close(mean, torch.tensor(expected), rtol=0, atol=1e-6)
    assert aggregate_logits(logits, weights, "mean").dtype == torch.float32
    torch.testing.assert_close(aggregate_logits(logits, weights, "max").sigmoid(), torch.tensor([0.8, 0.9, 0.5]))
    # Saturated scores stay finite, and one window is returned as it is.
    assert torch.isfinite(aggregate_logits(torch.tensor([[80.0, -80.0], [90.0, -90.0]]), [1, 1], "mean")).all()
    assert torch.equal(aggregate_logits(torch.tensor([[55.5, -3.0]]), [7], "mean"), torch.tensor([55.5, -3.0]))


# -- streamed file windows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels", "hop_s"), [(44100, 2, 1.0), (48000, 1, 0.4), (16000, 1, 1.0)])
def test_streamed_windows_equal_the_in_memory_ones(tmp_path, rate, channels, hop_s):
    frames = int(3.37 * rate) + 11
    audio = np.random.default_rng(5).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    path = tmp_path / "clip.wav"
    soundfile.write(path, audio, rate, subtype="FLOAT")
    window, hop = RATE, round(hop_s * RATE)
    # Many blocks of 4096 frames; the file is no multiple of the block size.
    streamed = list(tagging.file_windows(str(path), RATE, window, hop, block_frames=4096))
    whole = decode_audio({"path": str(path)}, RATE)  # decoded and resampled at once (soxr.resample)
    starts = window_starts(len(whole), window, hop)
    assert len(streamed) == len(starts) > 3 and starts[-1] == len(whole) - window
    for start, got in zip(starts, streamed, strict=True):
        np.testing.assert_array_equal(got, whole[start : start + window])
    short = list(tagging.file_windows(str(path), RATE, 10 * RATE, 10 * RATE))  # shorter than the window: whole clip
    assert len(short) == 1
    np.testing.assert_array_equal(short[0], whole)


def test_streaming_a_30_minute_file_keeps_memory_bounded(tmp_path):
    # 30 min 1.23 s of 48 kHz audio: 346 MB as float32; decoding it whole and resampling peaks at 770 MB of numpy
    # arrays (tracemalloc; 880 MB of RSS). numpy reports its allocations to tracemalloc, soundfile and soxr return
    # numpy arrays: a whole-file read shows here.
    path = tmp_path / "long.flac"
    rate, frames = 48000, 30 * 60 * 48000 + 59040
    rng = np.random.default_rng(6)
    with soundfile.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as sound:
        for start in range(0, frames, 10 * rate):
            block = np.zeros(min(10 * rate, frames - start), dtype=np.float32)
            block[:4800] = rng.uniform(-0.1, 0.1, 4800)  # some sound in each 10 s, silence elsewhere (cheap FLAC)
            sound.write(block)
    tracemalloc.start()
    try:
        lengths = [len(window) for window in tagging.file_windows(str(path), RATE, 160000, 160000)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(lengths) == len(window_starts(frames // 3, 160000, 160000)) == 181
    assert set(lengths) == {160000}
    assert peak < 100 * 2**20, f"{peak / 2**20:.1f} MiB"


# -- the model and spa-tag ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mids(mid_of):
    return [mid_of[name] for name in ["Speech", "Dog", "Bark", "Cat", "Siren", "White noise", "Tick"]]


def build(backbone: str, audio_config, mids, ontology, **config) -> SPAForAudioClassification:
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        backbone, audio_config, label_mids=mids, ontology=ontology, text_encoder=MINILM, projection_dim=16, **config
    )
    with torch.no_grad():  # spread the scores, so that aggregation differences show
        model.classifier.weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def cnn(mids, ontology):
    """The demo CNN with 1 s windows (as recipes/train.py records for --max_length_s 1.0)."""
    cnn_config = {"hidden_sizes": [8, 16], "num_mel_bins": 64, "dropout": 0.0}
    return build("demo_cnn", cnn_config, mids, ontology, frontend=frontend_preset("tiny"), window_length_s=1.0)


@pytest.fixture(scope="module")
def ast(mids, ontology):
    """A tiny AST taking exactly 100 frames: its window is derived, 99 hops + one frame = 16240 samples."""
    return build("ast", tiny_ast_config(), mids, ontology)


def manual_scores(model, wave: np.ndarray, window: int, hop: int, aggregation: str) -> torch.Tensor:
    """Each window scored alone, aggregated by hand."""
    with torch.no_grad():
        logits = torch.cat(
            [model(torch.from_numpy(wave[s : s + window])[None]).logits for s in window_starts(len(wave), window, hop)]
        )
    probabilities = logits.double().sigmoid()
    return probabilities.max(dim=0).values if aggregation == "max" else probabilities.mean(dim=0)


def noise(seconds: float, seed: int) -> np.ndarray:
    """White noise whose loudness changes every 0.1 s, so that windows score differently."""
    rng = np.random.default_rng(seed)
    samples = round(seconds * RATE)
    loudness = np.repeat(rng.uniform(0.01, 0.5, samples // 1600 + 1), 1600)[:samples]
    return (rng.standard_normal(samples) * loudness).astype(np.float32)


def test_the_model_windows_long_clips_at_inference_only(cnn):
    wave = noise(2.7, 7)  # 2.7 windows: starts 0, 16000, 27200
    with torch.no_grad():
        out = cnn(torch.from_numpy(wave)[None])
        whole = cnn.spa(torch.from_numpy(wave)[None]).audio_embeds
    torch.testing.assert_close(out.logits.double().sigmoid()[0], manual_scores(cnn, wave, RATE, RATE, "mean"))
    windows = torch.stack([torch.from_numpy(wave[s : s + RATE]) for s in (0, 16000, 27200)])
    with torch.no_grad():
        embeds = cnn.spa(windows).audio_embeds
    torch.testing.assert_close(out.audio_embeds[0], embeds.mean(dim=0))
    torch.testing.assert_close(whole[0], out.audio_embeds[0])  # SPAModel windows alike
    # A batch: a long row and a short padded row; the short row is scored as it is alone.
    batch = torch.zeros(2, len(wave))
    batch[0], batch[1, :8000] = torch.from_numpy(wave), torch.from_numpy(wave[:8000])
    mask = (torch.arange(len(wave)) < torch.tensor([[len(wave)], [8000]])).long()
    with torch.no_grad():
        both = cnn(batch, mask).logits
        short = cnn(batch[1:, :RATE], mask[1:, :RATE]).logits
    torch.testing.assert_close(both[0], out.logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[1], short[0], rtol=1e-5, atol=1e-5)
    # With labels, the loss is that of the aggregated outputs; in training the whole clip goes through at once.
    labels = torch.zeros(1, 7)
    labels[0, 2] = 1
    training = copy.deepcopy(cnn).train()  # BatchNorm updates its running statistics in training mode
    with torch.no_grad():
        evaluated = cnn(torch.from_numpy(wave)[None], labels=labels)
        trained = training(torch.from_numpy(wave)[None], labels=labels)
        whole = training.spa(torch.from_numpy(wave)[None]).audio_embeds
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(evaluated.bce_loss, bce)
    torch.testing.assert_close(evaluated.audio_embeds, out.audio_embeds)
    torch.testing.assert_close(trained.audio_embeds, whole)


def save(model, path: Path) -> Path:
    model.save_pretrained(path)
    SPAFeatureExtractor(sampling_rate=RATE, max_length_s=1.0).save_pretrained(path)
    return path


@pytest.mark.parametrize("backbone", ["cnn", "ast"])
def test_pipeline_and_spa_tag_give_the_same_scores(backbone, request, tmp_path):
    model = request.getfixturevalue(backbone)
    path = save(model, tmp_path / "model")
    window = window_settings(model.config).length
    wave = noise(2.7 * window / RATE, 8)
    soundfile.write(tmp_path / "clip.wav", wave, RATE, subtype="FLOAT")
    tagger = pipeline("audio-classification", model=str(path))
    piped = {item["label"]: item["score"] for item in tagger(wave, top_k=7)}
    tagged = tagging.file_scores(str(tmp_path / "clip.wav"), tagger.model, tagger.feature_extractor)
    labels = model.config.label_names
    np.testing.assert_allclose([piped[label] for label in labels], tagged, rtol=0, atol=1e-5)
    # Both are the windows scored alone and averaged (not the first window, not the whole clip at once).
    expected = manual_scores(model, wave, window, window, "mean").numpy()
    np.testing.assert_allclose(tagged, expected, rtol=0, atol=1e-5)
    first = manual_scores(model, wave[:window], window, window, "mean").numpy()
    assert np.abs(tagged - first).max() > 1e-3


def test_spa_tag_resamples_as_the_extractor_and_honours_hop_and_aggregation(cnn, tmp_path):
    path = save(cnn, tmp_path / "model")
    extractor = SPAFeatureExtractor.from_pretrained(path)
    wave_44k = np.random.default_rng(9).uniform(-0.3, 0.3, int(2.3 * 44100)).astype(np.float32)
    soundfile.write(tmp_path / "clip.wav", wave_44k, 44100, subtype="FLOAT")
    tagged = tagging.file_scores(str(tmp_path / "clip.wav"), cnn, extractor)
    with torch.no_grad():  # the in-memory path: the extractor resamples the whole clip at once
        in_memory = cnn(**extractor(wave_44k, sampling_rate=44100, return_tensors="pt")).logits.sigmoid()[0]
    np.testing.assert_allclose(tagged, in_memory.numpy(), rtol=0, atol=1e-5)
    wave = decode_audio({"path": str(tmp_path / "clip.wav")}, RATE)
    for hop_s, aggregation in ((0.25, "max"), (0.5, "mean")):
        got = tagging.file_scores(str(tmp_path / "clip.wav"), cnn, extractor, hop_s=hop_s, aggregation=aggregation)
        expected = manual_scores(cnn, wave, RATE, round(hop_s * RATE), aggregation).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(got - tagged).max() > 1e-4  # the hop changes the windows


def test_spa_tag_on_a_32_01_s_file_and_a_too_short_one(cnn, tmp_path, capsys):
    # 10 s windows (the default for a model trained on any length): 0, 10, 20 s and one ending at 32.01 s. Before,
    # the 0.01 s tail was a window of its own and failed with "Input of 160 samples is too short".
    model = SPAForAudioClassification(SPAConfig(**{**cnn.config.to_dict(), "window_length_s": None})).eval()
    model.load_state_dict(cnn.state_dict())
    path = save(model, tmp_path / "model")
    wave = noise(32.01, 10)
    soundfile.write(tmp_path / "long.flac", wave, RATE, subtype="PCM_24")
    soundfile.write(tmp_path / "tiny.wav", np.zeros(100, dtype=np.float32), RATE)
    soundfile.write(tmp_path / "one_sample_96k.wav", np.full(1, 0.5, dtype=np.float32), 96000)  # resamples to none
    files = [str(tmp_path / name) for name in ("long.flac", "tiny.wav", "one_sample_96k.wav")]
    code = cli.main([*files, "--model", str(path), "--json", "--top-k", "7"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{tmp_path / 'tiny.wav'}: too short: 100 sample(s) at {RATE} Hz" in captured.err
    assert f"{tmp_path / 'one_sample_96k.wav'}: too short: 0 sample(s)" in captured.err
    assert "long.flac" not in captured.err
    tagged = json.loads(captured.out.strip().splitlines()[-1])
    scores = {item["label"]: item["score"] for item in tagged["labels"]}
    decoded = decode_audio({"path": str(tmp_path / "long.flac")}, RATE)
    assert window_starts(len(decoded), 160000, 160000) == [0, 160000, 320000, 352160]
    expected = manual_scores(model, decoded, 160000, 160000, "mean").numpy()
    np.testing.assert_allclose([scores[label] for label in model.config.label_names], expected, rtol=0, atol=1e-5)


def test_spa_tag_says_what_is_wrong_with_each_bad_file_and_keeps_the_decoder_quiet(cnn, tmp_path, capfd):
    # Before: "unreadable audio (File does not exist or is not a regular file (possibly a pipe?).)" for a text file
    # named .mp3, with three libmpg123 lines above it, and "(System error.)" for a missing file.
    path = save(cnn, tmp_path / "model")
    (tmp_path / "text.mp3").write_text("hello, not audio\n")
    (tmp_path / "folder.wav").mkdir()
    soundfile.write(tmp_path / "good.wav", noise(1.5, 3), RATE)
    files = [str(tmp_path / name) for name in ("text.mp3", "missing.wav", "folder.wav", "good.wav")]
    capfd.readouterr()
    assert cli.main([*files, "--model", str(path), "--json"]) == 1
    captured = capfd.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {files[0]}: not audio (or a format soundfile cannot read); the decoder said: Note: Illegal "
        "Audio-MPEG-Header 0x00000000 at offset 13. (and 2 more line(s))",
        f"error: {files[1]}: not a file (no such file)",
    ]  # a folder, even one named .wav, is walked for audio files: this one holds none
    assert "MPEG" not in captured.err.replace(errors[0], "")  # libmpg123's own lines never reach the terminal
    assert json.loads(captured.out.strip())["file"] == files[3]
