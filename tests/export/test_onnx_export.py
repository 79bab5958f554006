"""ONNX export (modeling_spa/export/onnx.py): both graphs against torch under onnxruntime, on random windows and on
real recordings, for the demo CNN and two paper backbones (PaSST and CNN14, tiny), and the standalone tagger, run
where torch and the SPA package cannot be imported, against spa-tag."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.backbone_cnn14 import Cnn14Config
from modeling_spa.backbone_passt import PaSSTConfig
from modeling_spa.cli.export import main as export_main
from modeling_spa.data import audio_files
from modeling_spa.export import onnx as onnx_export
from modeling_spa.export import onnx_tagger
from modeling_spa.frontend import LogMelFrontend, frontend_preset
from modeling_spa.tagging import tag_file
from modeling_spa.windowing import window_starts

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime, onnxscript) is not installed")

DOG, CAT, SPEECH = "/m/0bt9lr", "/m/01yrx", "/m/09x0r"
# The real recordings (recipes/build_real_sounds.py's `sources` build); its test split is never trained on.
REAL_SOURCES = Path(os.environ.get("SPA_REAL_SOUNDS", Path(__file__).parents[2] / "outputs/real_sounds/sources"))
# Torch, the package and transformers may not be imported by the standalone tagger: the blocker makes any such
# import fail, then reports what got in (it must be nothing).
BLOCKER = textwrap.dedent("""
    import runpy, sys
    BLOCKED = ("torch", "modeling_spa", "transformers")
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked import of {name}")
    sys.meta_path.insert(0, Blocker())
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        print("IMPORTED:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED), file=sys.stderr)
""")


def randomize_heads_(model: SPAForAudioClassification, seed: int = 0) -> SPAForAudioClassification:
    """Random backbone statistics and head weights (never the front-end's buffers), so that outputs vary."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.spa.backbone.named_buffers():
            if name.endswith("running_mean"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def tiny_demo() -> SPAForAudioClassification:
    config = SPAConfig(
        backbone="demo_cnn", audio_config={"hidden_sizes": [4, 8], "num_mel_bins": 64},
        frontend=frontend_preset("tiny"), projection_dim=8, window_length_s=1.0,
        id2label={0: "Dog", 1: "Cat", 2: "Speech"},
        label_mids=[DOG, CAT, SPEECH], label_paths=["Animal > Dog", "Animal > Cat", "Human sounds > Speech"],
    )  # fmt: skip
    return randomize_heads_(SPAForAudioClassification(config))


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    model = tiny_demo()
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder / "model")
    SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0).save_pretrained(folder / "model")
    out = folder / "onnx"
    assert export_main([str(folder / "model"), str(out)]) == 0  # spa-export
    return SPAForAudioClassification.from_pretrained(folder / "model").eval(), out


def test_the_export_folder(demo_export):
    _, out = demo_export
    assert sorted(p.name for p in out.iterdir()) == [
        "audio_files.py", "export.json", "frontend.onnx", "labels.json", "model.onnx", "tag_onnx.py", "waveforms.py"
    ]  # fmt: skip
    info = json.loads((out / "export.json").read_text())
    assert info["inference"] == {"sampling_rate": 16000, "window": 16000, "hop": 16000, "aggregation": "mean",
                                 "min_samples": 400}  # fmt: skip
    assert info["verification"]["random_windows"]["max_abs_logit_difference"] < 1e-4
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {"names": ["Dog", "Cat", "Speech"], "mids": [DOG, CAT, SPEECH],
                      "paths": ["Animal > Dog", "Animal > Cat", "Human sounds > Speech"]}  # fmt: skip
    assert (out / "tag_onnx.py").read_text() == open(onnx_tagger.__file__).read()
    # The package's own reader beside it, not a copy that could drift.
    assert (out / "audio_files.py").read_text() == open(audio_files.__file__).read()


def test_both_graphs_equal_torch_for_other_batch_sizes_and_masked_windows(demo_export):
    model, out = demo_export
    tagger = onnx_tagger.load(out)
    rng = np.random.default_rng(1)
    values = (0.2 * rng.standard_normal((5, 16000))).astype(np.float32)  # traced with 2: the batch axis is dynamic
    mask = np.ones_like(values, dtype=bool)
    for row, real in ((3, 400), (4, 7000)):  # the shortest clip the front-end takes, and another short one
        values[row, real:] = 0.0
        mask[row, real:] = False
    features, frame_mask = tagger.frontend.run(None, {"input_values": values, "attention_mask": mask})
    torch_features, torch_mask = model.spa.frontend(torch.from_numpy(values), torch.from_numpy(mask))
    np.testing.assert_allclose(features, torch_features.numpy(), atol=2e-5)
    np.testing.assert_array_equal(frame_mask, torch_mask.numpy())
    logits, embeds = tagger.model.run(None, {"features": features, "frame_mask": frame_mask})
    with torch.inference_mode():
        output = model(input_values=torch.from_numpy(values), attention_mask=torch.from_numpy(mask))
    np.testing.assert_allclose(logits, output.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(embeds, output.audio_embeds.numpy(), atol=1e-4)
    assert np.ptp(logits[:, 0]) > 1e-2  # the windows give different logits: the comparison can see a difference


@pytest.mark.parametrize("preset", ["ast", "passt"])  # Kaldi framing with per-frame DC removal; pre-emphasis, 32 kHz
def test_other_front_ends_export(tmp_path, preset):
    frontend = LogMelFrontend(**{**frontend_preset(preset), "max_frames": 120}).eval()
    rate = frontend.sampling_rate
    settings = onnx_tagger.Settings(rate, frontend.hop_length * 110, frontend.hop_length * 110, "mean", 1000)
    values, mask = onnx_export.example_windows(settings, batch=2)
    onnx_export.export_graph(frontend, (values, mask), (["input_values", "attention_mask"], ["features", "frame_mask"]),
                             tmp_path / "frontend.onnx", onnx_export.DEFAULT_OPSET)  # fmt: skip
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "frontend.onnx"), providers=["CPUExecutionProvider"])
    values, mask = onnx_export.example_windows(settings, batch=3)
    features, frame_mask = session.run(None, {"input_values": values.numpy(), "attention_mask": mask.numpy()})
    expected, expected_mask = frontend(values, mask)
    np.testing.assert_allclose(features, expected.numpy(), atol=2e-4)  # features of scale ~2 (normalised log-mel)
    np.testing.assert_array_equal(frame_mask, expected_mask.numpy())


def tiny_paper_model(backbone: str) -> SPAForAudioClassification:
    """PaSST or CNN14 built in code at a tiny size, on its own front-end (32 kHz), windows of the span of 200 frames."""
    if backbone == "passt":
        audio = PaSSTConfig(max_length=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64)  # fmt: skip
    else:
        audio = Cnn14Config(hidden_sizes=[4, 8, 16], embedding_size=16, num_audioset_classes=0)
    config = SPAConfig(backbone=backbone, audio_config=audio, frontend={**frontend_preset(backbone), "max_frames": 200},
                       projection_dim=16, id2label={i: f"c{i}" for i in range(5)})  # fmt: skip
    return randomize_heads_(SPAForAudioClassification(config))


@pytest.mark.parametrize("backbone", ["passt", "cnn14"])
def test_paper_backbones_export(tmp_path, backbone):
    info = onnx_export.export(f"tiny-{backbone}", tmp_path, model=tiny_paper_model(backbone))
    # Three windows of 2 s at 32 kHz, the last a masked short clip (PaSST's attention and CNN14's convolutions mask
    # its padding).
    checked = info["verification"]["random_windows"]
    assert checked["windows"] == 3 and checked["max_abs_logit_difference"] < 1e-4
    # 200 frames of hop 320: PaSST's Kaldi frames span 64000 samples, CNN14's centred STFT frames one sample less.
    assert info["inference"]["window"] == {"passt": 64000, "cnn14": 63999}[backbone]


@pytest.fixture(scope="module")
def real_sources():
    if not (REAL_SOURCES / "data").is_dir():
        pytest.skip(f"no real recordings at {REAL_SOURCES}: build them (recipes/build_real_sounds.py) or set "
                    "SPA_REAL_SOUNDS")  # fmt: skip
    return str(REAL_SOURCES)


@pytest.mark.parametrize("backbone", ["demo_cnn", "passt", "cnn14"])
def test_onnxruntime_equals_torch_on_real_recordings(demo_export, real_sources, tmp_path, backbone):
    if backbone == "demo_cnn":
        model, out = demo_export
    else:
        model, out = tiny_paper_model(backbone), tmp_path
        onnx_export.export(backbone, out, model=model)
    checked = onnx_export.verify_clips(model, out, real_sources, "test", clips=6)
    # Clips longer than a window among them: more windows than clips, the last of a clip aligned to its end.
    assert checked["clips"] == 6 and checked["windows"] > 6
    # float32 FFTs differ in rounding (pocketfft vs onnxruntime's DFT); CNN14's dB features near the floor carry it.
    assert checked["max_abs_logit_difference"] < 3e-4 and checked["max_abs_logit"] > 0.1  # logits of some size
    assert checked["max_abs_score_difference"] < 1e-5
    # The front-end graph alone against the torch front-end, on the same real windows.
    tagger = onnx_tagger.load(out)
    values, mask = real_windows(tagger.settings, real_sources)
    features, frame_mask = tagger.frontend.run(None, {"input_values": values, "attention_mask": mask})
    expected, expected_mask = model.spa.frontend(torch.from_numpy(values), torch.from_numpy(mask))
    np.testing.assert_array_equal(frame_mask, expected_mask.numpy())
    assert_features_equal(features, expected.numpy(), model.config.frontend["log"])


def assert_features_equal(features: np.ndarray, expected: np.ndarray, log: str) -> None:
    if log != "db":
        np.testing.assert_allclose(features, expected, atol=2e-4)  # normalised natural-log features of scale ~2
        return
    # CNN14's dB features: a float32 FFT rounds each bin to ~1e-6 of its frame's peak power, a large share of a bin
    # near the -100 dB floor (up to hundredths of a dB there). So compare powers against the frame's peak, and dB
    # within 40 dB of the peak.
    power, expected_power = 10.0 ** (features / 10.0), 10.0 ** (expected / 10.0)
    peak = expected_power.max(axis=2, keepdims=True)
    assert (np.abs(power - expected_power) / peak).max() < 1e-5
    loud = expected > expected.max(axis=2, keepdims=True) - 40.0
    assert loud.mean() > 0.1 and np.abs(features - expected)[loud].max() < 5e-4


def real_windows(settings: onnx_tagger.Settings, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The windows of the first three real test clips, at the model's rate."""
    from modeling_spa.data import decode_audio, load_audioset

    rows = load_audioset(dataset, "test").select(range(3))
    pieces = [onnx_tagger.windows(decode_audio(row["audio"], settings.sampling_rate), settings)[:2] for row in rows]
    return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])


def test_window_starts_match_the_models(demo_export):
    for n, window, hop in [(5, 10, 10), (10, 10, 10), (11, 10, 10), (35, 10, 10), (35, 10, 4), (40, 10, 5)]:
        assert onnx_tagger.window_starts(n, window, hop) == window_starts(n, window, hop)


def write_audio(folder):
    """A 3.3 s stereo file at 44.1 kHz (four windows of 1 s, the last aligned to the end) and a 0.5 s one."""
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) * (t < 1.7), 0.1 * rng.standard_normal(len(t))], axis=1)
    soundfile.write(folder / "long.flac", stereo, 44100)
    soundfile.write(folder / "short.wav", 0.2 * rng.standard_normal(8000), 16000, subtype="PCM_16")
    soundfile.write(folder / "tiny.wav", np.zeros(100), 16000)  # shorter than one analysis window
    return [folder / "long.flac", folder / "short.wav"]


def run_blocked(out, *args: str) -> subprocess.CompletedProcess:
    script = out.parent / "blocked.py"
    script.write_text(BLOCKER)
    # An empty working directory and no PYTHONPATH: the package cannot come in from the checkout either.
    return subprocess.run([sys.executable, str(script), str(out / "tag_onnx.py"), *args], capture_output=True,
                          text=True, cwd=out.parent, env={"PATH": "/usr/bin:/bin"}, timeout=300)  # fmt: skip


def test_the_standalone_tagger_needs_neither_torch_nor_the_package_and_matches_spa_tag(demo_export, tmp_path):
    model, out = demo_export
    files = write_audio(tmp_path)
    result = run_blocked(out, *map(str, files), "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert "IMPORTED: []" in result.stderr
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    for line, path in zip(result.stdout.splitlines(), files, strict=True):
        ours = json.loads(line)["labels"]
        reference = tag_file(str(path), model, extractor, top_k=3)  # spa-tag, in torch
        assert [item["label"] for item in ours] == [item["label"] for item in reference]
        assert [item["path"] for item in ours] == [item["path"] for item in reference]
        np.testing.assert_allclose([i["score"] for i in ours], [i["score"] for i in reference], atol=1e-5)


def test_the_blocker_blocks_and_the_tagger_reports_bad_files(demo_export, tmp_path):
    _, out = demo_export
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n")
    script = out.parent / "blocked.py"
    script.write_text(BLOCKER)
    blocked = subprocess.run([sys.executable, str(script), str(probe)], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"}, timeout=120)  # fmt: skip
    assert blocked.returncode != 0 and "blocked import of torch" in blocked.stderr
    write_audio(tmp_path)
    result = run_blocked(out, str(tmp_path / "tiny.wav"), str(tmp_path / "missing.wav"))
    assert result.returncode == 1
    assert "tiny.wav: too short: 100 sample(s) at 16000 Hz, one analysis window of the model needs 400" in result.stderr
    assert "missing.wav" in result.stderr


def test_verify_clips_names_undecodable_clips_and_refuses_to_compare_nothing(demo_export, tmp_path):
    import io

    import datasets
    import soundfile

    model, out = demo_export
    good = io.BytesIO()
    soundfile.write(good, np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32), 16000, format="FLAC")
    rows = {"video_id": ["good", "broken"], "audio": [{"bytes": good.getvalue(), "path": "good.flac"},
                                                       {"bytes": b"not audio", "path": "broken.flac"}],
            "labels": [[DOG], [CAT]], "human_labels": [["Dog"], ["Cat"]]}  # fmt: skip
    (tmp_path / "data" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "data" / "data" / "test-00000-of-00001.parquet"))
    checked = onnx_export.verify_clips(model, out, str(tmp_path / "data"), "test", clips=2)
    assert checked["clips"] == 1 and checked["windows"] == 2  # 1.5 s in 1 s windows: one, then one end-aligned
    assert len(checked["skipped_clips"]) == 1 and checked["skipped_clips"][0].startswith("broken: ")
    assert checked["max_abs_logit_difference"] < 1e-4
    with pytest.raises(ValueError, match="no clip of .* could be compared"):
        onnx_export.verify_clips(model, out, str(tmp_path / "data"), "test", clips=0)


def long_mp3(folder: Path, seconds: float = 8.0) -> Path:
    """Stereo tones and noise at 48 kHz as MP3, 0.2 s of sound in every 0.5 s (after digital silence libsndfile's
    MP3 seeks went wrong): more than one decoding block (262,144 frames, 5.5 s)."""
    t = np.arange(int(seconds * 48000)) / 48000
    rng = np.random.default_rng(3)
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 1234 * t) + 0.05 * rng.standard_normal(len(t))
    path = folder / "long.mp3"
    soundfile.write(path, ((t % 0.5) < 0.2)[:, None] * np.stack([left, right], axis=1), 48000, format="MP3")
    return path


def test_spa_tag_the_tagger_and_the_model_score_an_mp3_alike(demo_export, tmp_path):
    # Before, spa-tag decoded the samples after each block boundary of an MP3 differently from a whole-file decode
    # (soundfile seeks after every read), and so differed from the pipeline and from the tagger.
    import soxr

    from modeling_spa.tagging import file_scores

    model, out = demo_export
    path = long_mp3(tmp_path)
    extractor = SPAFeatureExtractor(sampling_rate=16000, max_length_s=1.0)
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # the whole file at once
    wave = soxr.resample(np.ascontiguousarray(samples.mean(axis=1)), rate, 16000, quality="HQ")
    with torch.no_grad():  # the model on the whole clip, windowed by itself: what the pipeline returns
        whole = model(**extractor(wave, sampling_rate=16000, return_tensors="pt")).logits.sigmoid()[0].numpy()
    tagged = file_scores(str(path), model, extractor)
    np.testing.assert_allclose(tagged, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(onnx_tagger.file_scores(onnx_tagger.load(out), path), whole, rtol=0, atol=1e-5)


def test_the_tagger_streams_a_long_file(demo_export, tmp_path):
    # Before, it read the whole file at once: 4 minutes of 48 kHz mono are 46 MB of float32 before resampling.
    import tracemalloc

    _, out = demo_export
    path, rate = tmp_path / "long.flac", 48000
    with soundfile.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as sound:
        for start in range(0, 4 * 60 * rate, 10 * rate):
            block = np.zeros(10 * rate, dtype=np.float32)
            block[:4800] = np.random.default_rng(start).uniform(-0.1, 0.1, 4800)  # cheap FLAC: mostly silence
            sound.write(block)
    tagger = onnx_tagger.load(out)
    tracemalloc.start()
    try:
        scores = onnx_tagger.file_scores(tagger, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert peak < 20 * 2**20, f"{peak / 2**20:.1f} MiB"
