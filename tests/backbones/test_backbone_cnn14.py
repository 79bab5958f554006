"""PANNs CNN14 against panns_inference 0.1.1's `Cnn14` (its own torchlibrosa STFT/mel and CNN), its checkpoint
converter, and the SPA model contract on a tiny CNN14."""

import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from peer_utils import randomize_
from remote_code import run_without_package
from transformers import AutoModel

from modeling_spa import SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.backbone_cnn14 import Cnn14Backbone, Cnn14Config, Cnn14ConvBlock
from modeling_spa.backbones import backbone_spec
from modeling_spa.conversion import FAMILY_LICENCES, RELEASES, CheckpointError, load_backbone
from modeling_spa.frontend import LogMelFrontend, frontend_preset

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RATE = 32000
# Four blocks (three poolings: at least 8 frames), a small embedding, the real head size.
TINY = {"hidden_sizes": [4, 8, 8, 16], "embedding_size": 16, "block_dropout": 0.0, "embedding_dropout": 0.0}


def panns_models():
    """panns_inference.models without running the package's __init__, which downloads a label CSV at import."""
    if "panns_inference.models" not in sys.modules:
        package = types.ModuleType("panns_inference")
        package.__path__ = [str(Path(importlib.util.find_spec("panns_inference").origin).parent)]
        sys.modules.setdefault("panns_inference", package)
    return importlib.import_module("panns_inference.models")


def clips(batch: int, samples: int, seed: int) -> torch.Tensor:
    """Noise with a tone whose pitch differs per clip: the clips' outputs must differ for a comparison to mean much."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / RATE
    tones = torch.stack([0.3 * torch.sin(2 * torch.pi * (300 + 900 * row) * t) for row in range(batch)])
    return tones + 0.05 * torch.randn(batch, samples, generator=generator)


@pytest.fixture(scope="module")
def peer():
    torch.manual_seed(0)
    model = panns_models().Cnn14(RATE, 1024, 320, 64, 50, 14000, 527)
    # The convolutions keep their random (Xavier) initialisation; BatchNorm affine parameters and the fully connected
    # layers (zero biases by default) are randomised. The STFT and mel filterbank stay the peer's.
    for index, (name, module) in enumerate(model.named_modules()):
        if isinstance(module, torch.nn.BatchNorm2d) or name in ("fc1", "fc_audioset"):
            randomize_(module, seed=index)
    calibrate_batchnorm_(model)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm_(model: torch.nn.Module) -> None:
    """Running statistics of other random audio. With randomize_'s statistics, which do not normalise, the signal
    fades through the twelve convolutions and the BatchNorm biases dominate: the scores of two different clips then
    differ by 0.003 and a comparison tells little. Calibrated, they differ by 0.15."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # the statistics of this one batch
    model.train()(clips(4, 32000, seed=99) * torch.tensor([[1.0], [0.3], [0.1], [2.0]]))
    for norm in norms:
        norm.momentum = 0.1


def sampler_state() -> dict:
    """What PANNs' BalancedTrainSampler.state_dict() leaves in the checkpoint: NumPy arrays and scalars."""
    rng = np.random.default_rng(0)
    return {
        "indexes_per_class": [rng.permutation(50).astype(np.int64) for _ in range(3)],
        "queue": [np.int64(4), np.int64(17)],
        "pointers_of_classes": np.zeros(527, dtype=np.int32),
        "weights": rng.random(5).astype(np.float32),
        "flags": np.array([True, False]),
    }


def write_original(path: Path, state: dict) -> Path:
    """A checkpoint as audioset_tagging_cnn's main.py saves it."""
    torch.save({"iteration": 660000, "model": state, "sampler": sampler_state()}, path)
    return path


@pytest.fixture(scope="module")
def original_file(peer, tmp_path_factory):
    return write_original(tmp_path_factory.mktemp("panns") / "Cnn14_mAP=0.431.pth", peer.state_dict())


@pytest.fixture(scope="module")
def mids(mid_of):
    return [mid_of[name] for name in ("Speech", "Dog", "Bark", "Cat", "Siren")]


@pytest.fixture(scope="module")
def converted(original_file, mids, ontology):
    """The converter end to end: the original file -> from_backbone(pretrained_backbone=path)."""
    model = SPAForAudioClassification.from_backbone(
        "cnn14", pretrained_backbone=str(original_file), label_mids=mids, ontology=ontology, text_encoder=MINILM,
        projection_dim=16,
    )  # fmt: skip
    return model.eval()


def test_converted_model_is_the_published_architecture(converted):
    backbone = converted.spa.backbone
    assert converted.config.pretrained_backbone == "Cnn14_mAP=0.431.pth"
    assert converted.config.frontend == frontend_preset("cnn14") and converted.config.audio_config == Cnn14Config()
    assert sum(p.numel() for p in backbone.parameters()) == 80_753_615  # PANNs' 81.8M minus the STFT/mel tensors
    assert backbone_spec("cnn14").pooled_size(converted.config.audio_config) == 2048
    # The original head is off the SPA path and frozen; everything else trains.
    assert not backbone.fc_audioset.weight.requires_grad and backbone.fc1.weight.requires_grad


@pytest.mark.parametrize(("samples", "batch"), [(32000, 2), (105600, 1), (320000, 1)], ids=["1s", "3.3s", "10s"])
def test_embedding_and_audioset_scores_equal_the_peer(converted, peer, samples, batch):
    audio = clips(batch, samples, seed=samples)
    with torch.no_grad():
        expected = peer(audio)
        pooled = converted.spa(audio).pooled_output
        scores = converted.audioset_scores(audio)
    assert pooled.shape == (batch, 2048) and scores.shape == (batch, 527)
    assert (pooled - expected["embedding"]).abs().max() < 1e-4
    assert (scores - expected["clipwise_output"]).abs().max() < 1e-4
    # Not a comparison of constants: the scores spread, away from 0 and 1, and differ between clips.
    assert 0.05 < expected["clipwise_output"].std() and 0.01 < expected["clipwise_output"].min()
    if batch > 1:
        assert (expected["clipwise_output"][0] - expected["clipwise_output"][1]).abs().max() > 0.05


def test_padding_does_not_change_a_clip(converted, peer):
    short = clips(2, 32000, seed=5)
    long = clips(1, 64000, seed=6)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 32000)), long])
    mask = torch.ones(3, 64000, dtype=torch.long)
    mask[:2, 32000:] = 0
    with torch.no_grad():
        scores = converted.audioset_scores(batch, mask)
        embeds = converted.spa(batch, mask).pooled_output
        alone = converted.spa(short).pooled_output
        expected_short, expected_long = peer(short)["clipwise_output"], peer(long)["clipwise_output"]
        panns_padded = peer(batch[:1])["clipwise_output"]
    assert (scores[2] - expected_long[0]).abs().max() < 1e-4  # a full-length row is untouched
    # A padded clip gives what it gives alone, its last frames included (the front-end reflects each clip's own end
    # as the STFT of the clip alone does; before that, zeros there changed the embedding by 6.3e-4).
    assert (scores[:2] - expected_short).abs().max() < 1e-4
    assert (embeds[:2] - alone).abs().max() < 2e-5
    # PANNs' way, pooling over the padding too, changes it far more.
    assert (panns_padded[0] - expected_short[0]).abs().max() > 0.1


def test_cnn14_frontend_equals_torchlibrosa():
    extractors = panns_models().Cnn14(RATE, 1024, 320, 64, 50, 14000, 527)
    spectrogram, logmel = extractors.spectrogram_extractor, extractors.logmel_extractor
    audio = clips(2, 96000, seed=1)
    features, frame_mask = LogMelFrontend(**frontend_preset("cnn14"))(audio)
    with torch.no_grad():
        expected = logmel(spectrogram(audio))[:, 0]
        exact = logmel.double()(spectrogram.double()(audio.double()))[:, 0]  # its own code in float64
    assert features.shape == expected.shape == (2, 301, 64) and bool(frame_mask.all())
    assert expected.min() < -30 and expected.max() > 10  # dB over a real range
    # In dB. torchlibrosa's float32 STFT (a 1024-tap convolution) rounds more than the FFT: measured 1.2e-4 (its
    # error vs float64 1.2e-4, ours 2.8e-5), in bins 50 dB below the tone; 1.3e-5 on white noise.
    assert (features - expected).abs().max() < 5e-4 and (features - expected).abs().mean() < 1e-5
    assert (features.double() - exact).abs().max() < 1e-4


def test_release_is_registered_with_its_hash():
    release = RELEASES["cnn14-ap431"]
    assert release.backbone == "cnn14" and release.licence == "cc-by-4.0"
    assert release.filename == "Cnn14_mAP=0.431.pth"
    assert release.sha256 == "0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31"
    assert FAMILY_LICENCES["cnn14"] == "cc-by-4.0"


def test_short_name_offline_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPA_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = tmp_path / "checkpoints" / "Cnn14_mAP=0.431.pth"
    with pytest.raises(FileNotFoundError, match="downloads are off") as error:
        load_backbone("cnn14", "cnn14-ap431")
    assert str(target) in str(error.value) and "zenodo.org/records/3987831" in str(error.value)
    # A file in the cache that is not the release is refused by its hash.
    target.parent.mkdir()
    target.write_bytes(b"not the checkpoint")
    with pytest.raises(CheckpointError, match="has sha256 .* the release 'cnn14-ap431'"):
        load_backbone("cnn14", "cnn14-ap431")
    # Another family's release name is no CNN14 release.
    with pytest.raises(FileNotFoundError, match=r"known: cnn14-ap431\)"):
        load_backbone("cnn14", "passt-s-swa-ap476")


def tiny_original_state(**overrides) -> dict:
    """A tiny CNN14 state dict in the original layout, with the STFT and mel tensors PANNs keeps in it."""
    torch.manual_seed(3)
    backbone = randomize_(Cnn14Backbone(Cnn14Config(**{**TINY, **overrides})), seed=3)
    state = {
        "spectrogram_extractor.stft.conv_real.weight": torch.randn(513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": torch.randn(513, 1, 1024),
        "logmel_extractor.melW": torch.randn(513, 64),
        **backbone.state_dict(),
    }
    return state


def test_sizes_are_read_from_the_file(tmp_path):
    state = tiny_original_state(num_audioset_classes=10)
    backbone = load_backbone("cnn14", write_original(tmp_path / "tiny.pth", state))
    assert backbone.config.hidden_sizes == TINY["hidden_sizes"] and backbone.config.embedding_size == 16
    assert backbone.config.num_audioset_classes == 10 and not backbone.training
    assert torch.equal(backbone.conv_block2.bn1.running_var, state["conv_block2.bn1.running_var"])
    # Saved from DataParallel (`module.` on every key): the same weights.
    prefixed = {f"module.{key}": value for key, value in state.items()}
    again = load_backbone("cnn14", write_original(tmp_path / "dp.pth", prefixed))
    assert torch.equal(again.fc1.weight, state["fc1.weight"])


def test_a_file_written_with_numpy_1_loads(tmp_path):
    # PANNs saved its checkpoints with NumPy 1, whose pickles name `numpy.core.multiarray`, not NumPy 2's `_core`
    # (the pickles are otherwise the same). Legacy (non-zip) format, as torch < 1.6 wrote.
    state = tiny_original_state()
    path = tmp_path / "numpy1.pth"
    torch.save({"iteration": 1, "model": state, "sampler": sampler_state()}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert raw.count(b"numpy._core.multiarray") == 2  # _reconstruct and scalar, memoised
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    backbone = load_backbone("cnn14", path)
    assert torch.equal(backbone.conv_block4.conv2.weight, state["conv_block4.conv2.weight"])


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_hostile_and_wrong_files_give_clear_errors(tmp_path):
    malicious = tmp_path / "malicious.pth"
    torch.save({"model": {"bn0.weight": torch.ones(2)}, "sampler": Payload()}, malicious)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_backbone("cnn14", malicious)
    good = write_original(tmp_path / "good.pth", tiny_original_state())
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_backbone("cnn14", truncated)
    # A PaSST state dict (a plain dict of tensors, DESIGN section 8).
    passt = {"cls_token": torch.zeros(1, 1, 8), "patch_embed.proj.weight": torch.zeros(8, 1, 16, 16)}
    passt |= {f"blocks.{i}.attn.qkv.weight": torch.zeros(24, 8) for i in range(12)}
    torch.save(passt, tmp_path / "passt.pt")
    with pytest.raises(CheckpointError, match="does not look like a cnn14 checkpoint.*blocks.0.attn.qkv.weight"):
        load_backbone("cnn14", tmp_path / "passt.pt")
    state = tiny_original_state()
    del state["conv_block2.bn1.running_var"]
    state["conv_block9.conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing: conv_block2.bn1.running_var; unexpected: conv_block9"):
        load_backbone("cnn14", write_original(tmp_path / "damaged.pth", state))
    with pytest.raises(FileNotFoundError, match="neither a file nor a known release"):
        load_backbone("cnn14", tmp_path / "absent.pth")


def test_short_input_is_refused_with_the_samples_it_needs():
    backbone = Cnn14Backbone(Cnn14Config(hidden_sizes=[2] * 6, embedding_size=4)).eval()
    with pytest.raises(ValueError, match=r"at least 32 frames, got 31.*9,920 samples"):
        backbone(torch.zeros(1, 31, 64))
    assert backbone(torch.zeros(1, 32, 64)).pooler_output.shape == (1, 4)


# -- the SPA model contract on a tiny CNN14 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(mids, ontology):
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "cnn14", TINY, label_mids=mids, ontology=ontology, text_encoder=MINILM, projection_dim=16
    )
    randomize_(model.spa.backbone, seed=4)  # running statistics away from 0/1: padding and masks show
    return model.eval()


@pytest.fixture
def batch():
    audio = clips(3, 16000, seed=8)
    mask = torch.ones(3, 16000, dtype=torch.long)
    mask[2, 9000:] = 0
    audio[2, 9000:] = 0
    labels = torch.zeros(3, 5)
    labels[0, 0] = labels[1, [1, 2]] = labels[2, 4] = 1
    return audio, mask, labels


def test_tiny_model_padding_and_short_clips(tiny_model):
    clip = clips(1, 6000, seed=9)

    def scores(total: int, length: int = 6000) -> torch.Tensor:
        padded = torch.nn.functional.pad(clip[:, :length], (0, total - length))
        mask = (torch.arange(total) < length).long()[None]
        with torch.no_grad():
            return tiny_model.audioset_scores(padded, mask)

    torch.testing.assert_close(scores(9000), scores(20000), rtol=0, atol=1e-6)
    with torch.no_grad():
        assert (
            tiny_model.audioset_scores(torch.nn.functional.pad(clip, (0, 14000))) - scores(20000)
        ).abs().max() > 1e-3
    # Fewer real frames than the poolings need (8): scored over the first 8 frames, whatever the padding.
    torch.testing.assert_close(scores(9000, 1000), scores(20000, 1000), rtol=0, atol=1e-6)


def test_gradients_flow_and_the_original_head_stays_frozen(tiny_model, batch):
    audio, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model.freeze_unused()
    model.train()(audio, mask, labels=labels).loss.backward()
    for name in ("spa.backbone.conv_block1.conv1", "spa.backbone.conv_block4.conv2", "spa.backbone.fc1"):
        assert model.get_submodule(name).weight.grad.abs().sum() > 0, name
    assert model.spa.backbone.bn0.weight.grad.abs().sum() > 0
    assert model.spa.backbone.fc_audioset.weight.grad is None


def save(model: SPAForAudioClassification, path: Path) -> Path:
    model.save_pretrained(path)
    SPAFeatureExtractor(sampling_rate=RATE, max_length_s=1.0).save_pretrained(path)
    return path


def test_round_trip_and_hidden_states(tiny_model, batch, tmp_path):
    audio, mask, _ = batch
    path = save(tiny_model, tmp_path / "ckpt")
    assert json.loads((path / "config.json").read_text())["audio_config"]["model_type"] == "spa_cnn14"
    loaded = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(audio, mask).logits, tiny_model(audio, mask).logits)
        assert torch.equal(loaded.audioset_scores(audio, mask), tiny_model.audioset_scores(audio, mask))
        out = loaded.spa(audio, mask, output_hidden_states=True)
    frames = 1 + 16000 // 320
    shapes = [tuple(h.shape) for h in out.hidden_states]
    assert shapes == [(3, 1, 51, 64), (3, 4, 25, 32), (3, 8, 12, 16), (3, 8, 6, 8), (3, 16, 6, 8)] and frames == 51
    assert out.attentions is None


def test_remote_code_works_without_the_package(tiny_model, tmp_path):
    path = save(tiny_model, tmp_path / "ckpt")
    assert (path / "backbone_cnn14.py").is_file()
    audio = clips(2, 16000, seed=10).numpy()
    body = """
    extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
    inputs = extractor(list(arrays["audio"]), sampling_rate=32000, return_tensors="pt")
    with torch.no_grad():
        logits, scores = model(**inputs).logits, model.audioset_scores(**inputs)
    result = {"backbone": type(model.spa.backbone).__name__, "logits": logits.tolist(), "scores": scores.tolist()}
    """
    result = run_without_package(path, body, tmp_path, audio=audio)
    assert result["backbone"] == "Cnn14Backbone"
    inputs = SPAFeatureExtractor.from_pretrained(path)(list(audio), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(torch.tensor(result["logits"]), tiny_model(**inputs).logits)
        assert torch.equal(torch.tensor(result["scores"]), tiny_model.audioset_scores(**inputs))


def test_torch_compile_of_the_backbone(tiny_model, batch):
    audio, mask, _ = batch
    features, frame_mask = tiny_model.spa.frontend(audio, mask)
    backbone = tiny_model.spa.backbone
    # One graph (no break at the mask), through AOT autograd; inductor also works (2 s cached, ~15 s cold).
    compiled = torch.compile(backbone, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for mask_or_none in (frame_mask, None):
            expected = backbone(features, mask_or_none).pooler_output
            torch.testing.assert_close(compiled(features, mask_or_none).pooler_output, expected, rtol=0, atol=1e-6)


def test_bfloat16_autocast_keeps_the_frontend_in_float32(tiny_model, batch):
    audio, mask, _ = batch
    with torch.no_grad():
        reference = tiny_model(audio, mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features, _ = tiny_model.spa.frontend(audio, mask)
            logits = tiny_model(audio, mask).logits
            scores = tiny_model.audioset_scores(audio, mask)
    assert features.dtype == torch.float32
    assert torch.isfinite(logits).all() and torch.isfinite(scores).all()
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_gradient_checkpointing_recomputes_blocks_with_equal_gradients(tiny_model, batch):
    audio, mask, labels = batch
    grads, calls = [], []
    for checkpointing in (False, True):
        model = SPAForAudioClassification(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        if checkpointing:
            model.gradient_checkpointing_enable()
        blocks = [m for m in model.modules() if isinstance(m, Cnn14ConvBlock)]
        assert len(blocks) == 4 and all(b.gradient_checkpointing == checkpointing for b in blocks)
        count = []
        blocks[0].conv1.register_forward_hook(lambda *args, count=count: count.append(1))
        model.train()(audio, mask, labels=labels).loss.backward()
        grads.append(model.spa.backbone.conv_block1.conv1.weight.grad)
        calls.append(len(count))
    assert calls == [1, 2]  # recomputed in the backward pass
    torch.testing.assert_close(grads[1], grads[0])


def test_lora_on_the_documented_targets(tiny_model, batch):
    from peft import LoraConfig, get_peft_model

    audio, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    targets = r".*conv_block\d\.conv[12]|.*backbone\.fc1"
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=targets, modules_to_save=["classifier"]))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in lora.named_parameters() if ".lora_A" in n}
    assert len(adapted) == 9 and any(n.endswith("backbone.fc1") for n in adapted)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "classifier" in n for n in trainable)
    lora.train()(audio, mask, labels=labels).loss.backward()
    assert any(p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_B" in n)
