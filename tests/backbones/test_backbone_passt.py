"""The PaSST backbone against hear21passt 0.0.26 (the authors' package), its release files, and the SPA contract.

Full-size comparisons use random weights (`randomize_`: with PaSST's default init the outputs are nearly constant)
written in the release layout; every other test uses a tiny config.
"""

import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from peer_utils import randomize_, torchaudio_kaldi
from remote_code import run_without_package
from transformers import AutoModel

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.backbone_passt import PaSSTBackbone, PaSSTConfig, PaSSTMlp
from modeling_spa.conversion import RELEASES, CheckpointError, load_backbone
from modeling_spa.conversion.checkpoints import resolve_checkpoint
from modeling_spa.conversion.passt import config_from_state_dict
from modeling_spa.frontend import LogMelFrontend, frontend_preset

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RATE = 32000
DEFAULT_FILE = "passt-s-f128-p16-s10-ap.476-swa.pt"
# 128 mel bins as every release (the `passt` front-end), a 2 s window (200 frames: 12 x 19 patches), a small ViT.
TINY = {
    "max_length": 200,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "time_patchout": 5,
    "frequency_patchout": 2,
}

pytestmark = [
    pytest.mark.filterwarnings("ignore:Input image size"),  # hear21passt warns for every input not 998 frames long
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # its torch.cuda.amp.autocast
]


@pytest.fixture(scope="module")
def peer():
    """`hear21passt.models.passt`, imported with a stand-in for the one timm function its helpers import."""
    timm = types.ModuleType("timm")
    timm.__path__ = []
    timm.models = types.ModuleType("timm.models")
    timm.models.__path__ = []
    timm.models._hub = types.ModuleType("timm.models._hub")

    def download_cached_file(*args, **kwargs):
        raise RuntimeError("tests download nothing")

    timm.models._hub.download_cached_file = download_cached_file
    stand_ins = {"timm": timm, "timm.models": timm.models, "timm.models._hub": timm.models._hub}
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        from hear21passt.models import passt
        from hear21passt.wrapper import PasstBasicWrapper
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    passt.first_RUN = False  # its first forward prints every shape
    return types.SimpleNamespace(PaSST=passt.PaSST, Wrapper=PasstBasicWrapper)


def peer_model(peer, frames=998, stride=10, depth=12, width=768, heads=12, seed=0):
    """A distilled PaSST built by hear21passt (as its get_model does for the releases), with random weights."""
    torch.manual_seed(seed)
    init_weights, peer.PaSST.init_weights = peer.PaSST.init_weights, lambda self, mode="": None  # randomize_ sets all
    try:
        model = peer.PaSST(
            img_size=(128, frames),
            patch_size=16,
            stride=stride,
            distilled=True,
            num_classes=527,
            embed_dim=width,
            depth=depth,
            num_heads=heads,
        )
    finally:
        peer.PaSST.init_weights = init_weights
    return randomize_(model, seed=seed)


def peer_mel(hop=320):
    """hear21passt's AugmentMelSTFT in eval mode, as its base.py builds it (no SpecAugment: eval ignores it)."""
    torchaudio_kaldi()
    from hear21passt.models.preprocess import AugmentMelSTFT

    return AugmentMelSTFT(
        n_mels=128, sr=RATE, win_length=800, hopsize=hop, n_fft=1024, freqm=0, timem=0, fmin=0.0, fmax=None,
        fmin_aug_range=10, fmax_aug_range=2000,
    ).eval()  # fmt: skip


def audio(seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    wave = 0.1 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 700 * t) * np.sin(2 * np.pi * 0.5 * t)
    return torch.from_numpy(wave.astype(np.float32))[None]


@pytest.fixture(scope="module")
def full(peer):
    """The peer at full size with random weights, and ours with its state dict (the release layout)."""
    theirs = peer_model(peer)
    with torch.device("meta"):  # no init: the weights come from the peer
        ours = PaSSTBackbone(PaSSTConfig()).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    return theirs, ours


@pytest.fixture(scope="module")
def mids(mid_of):
    return [mid_of[name] for name in ("Speech", "Dog", "Bark", "Cat", "Siren")]


@pytest.fixture(scope="module")
def tiny_model(mids, ontology):
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "passt", TINY, label_mids=mids, ontology=ontology, text_encoder=MINILM, projection_dim=16, spa_alpha=0.5
    )
    randomize_(model.spa.backbone, seed=1)
    return model.eval()


@pytest.fixture
def batch():
    waves = torch.cat([audio(2.0, seed=1), audio(2.0, seed=2)])
    mask = torch.ones_like(waves, dtype=torch.long)
    mask[1, RATE:] = 0
    waves[1, RATE:] = 0
    labels = torch.zeros(2, 5)
    labels[0, [0, 3]] = 1
    labels[1, 1:3] = 1
    return waves, mask, labels


# -- the release layout and hear21passt -------------------------------------------------------------------------


def test_release_layout_loads_as_it_is(full):
    theirs, ours = full
    state = theirs.state_dict()
    assert len(state) == 159 and set(state) == set(ours.state_dict())
    assert state["freq_new_pos_embed"].shape == (1, 768, 12, 1) and state["time_new_pos_embed"].shape == (1, 768, 1, 99)
    config = config_from_state_dict(state, DEFAULT_FILE)
    assert (config.max_length, config.time_positions, config.frequency_stride, config.time_stride) == (1000, 99, 10, 10)
    assert (config.num_hidden_layers, config.num_attention_heads, config.frontend_preset) == (12, 12, "passt")


@pytest.mark.parametrize("seconds", [2.0, 10.0])
def test_equals_hear21passt(full, seconds):
    """Pooled embedding and AudioSet logits of ours vs hear21passt's PaSST, same weights, same log-mel."""
    theirs, ours = full
    features, _ = LogMelFrontend(**{**frontend_preset("passt"), "max_frames": None})(audio(seconds))
    assert features.shape[1] == {2.0: 200, 10.0: 1000}[seconds]
    with torch.no_grad():
        logits, pooled = theirs(features.transpose(1, 2)[:, None])
        output = ours(features)
        our_logits = ours.head(output.pooler_output)
    assert pooled.std() > 0.5 and logits.std() > 0.5  # random weights: a comparison that can fail
    torch.testing.assert_close(output.pooler_output, pooled, rtol=0, atol=1e-4)
    torch.testing.assert_close(our_logits, logits, rtol=0, atol=1e-4)
    print(
        f"{seconds} s: pooled max |diff| {(output.pooler_output - pooled).abs().max():.2e}, "
        f"logits {(our_logits - logits).abs().max():.2e}"
    )


@pytest.mark.parametrize("hop", [320, 160, 100])
def test_frontend_matches_augment_mel_stft(hop):
    preset = {320: "passt", 160: "passt_hop160", 100: "passt_hop100"}[hop]
    wave = audio(3.0, seed=hop)
    with torch.no_grad():
        expected = peer_mel(hop)(wave).transpose(1, 2)
    features, frame_mask = LogMelFrontend(**{**frontend_preset(preset), "max_frames": None})(wave)
    assert features.shape == expected.shape == (1, 1 + (3 * RATE - 1) // hop, 128) and bool(frame_mask.all())
    difference = (features - expected).abs().max()
    assert difference < 1e-4, difference
    print(f"hop {hop}: front-end max |diff| {difference:.2e} (normalised log-mel)")


def test_converter_end_to_end(peer, mids, ontology, tmp_path):
    """An original-layout file -> from_backbone(pretrained_backbone=path) -> audioset_scores = hear21passt's (mel +
    PaSST). The release's grid (12 x 99 patches) and 527 classes, a narrow ViT to keep it fast: test_equals_hear21passt
    is the full-size comparison."""
    theirs = peer_model(peer, depth=2, width=128, heads=2)
    path = tmp_path / DEFAULT_FILE
    torch.save(theirs.state_dict(), path)
    model = SPAForAudioClassification.from_backbone(
        "passt", pretrained_backbone=str(path), label_mids=mids, ontology=ontology, text_encoder=MINILM
    ).eval()
    assert model.config.pretrained_backbone == DEFAULT_FILE
    assert model.config.frontend == frontend_preset("passt") and model.config.frontend["max_frames"] == 1000
    assert not any(p.requires_grad for p in model.spa.backbone.head.parameters())  # off the SPA path
    wrapper = peer.Wrapper(mel=peer_mel(), net=theirs, mode="all").eval()
    wave = audio(2.0, seed=5)
    with torch.no_grad():
        scores = model.audioset_scores(wave)
        pooled = model.spa(wave).pooled_output
        expected = wrapper(wave)  # [logits, pooled]
    torch.testing.assert_close(scores, expected[:, :527].sigmoid(), rtol=0, atol=1e-4)
    torch.testing.assert_close(pooled, expected[:, 527:], rtol=0, atol=1e-4)
    print(f"end to end, 2 s: scores max |diff| {(scores - expected[:, :527].sigmoid()).abs().max():.2e}")


def test_sibling_releases_are_read_from_the_file(peer, tmp_path):
    """Stride 16, 20 s / 30 s, hop 160 / 100 and PaSST-L (depth 7) layouts: tables, depth and frames from the file."""
    cases = [  # file name, hear21passt input_tdim, stride, depth -> max_length, table, front-end
        ("passt-s-f128-p16-s16-ap.468.pt", 998, 16, 2, 1000, 62, "passt"),
        ("passt-s-f128-p16-s12-ap.470.pt", 998, 12, 2, 1000, 83, "passt"),
        ("passt-s-f128-20sec-p16-s10-ap.474-swa.pt", 2000, 10, 2, 2000, 200, "passt"),
        ("passt-s-f128-30sec-p16-s10-ap.473-swa.pt", 3000, 10, 2, 3000, 300, "passt"),
        ("passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt", 2000, 10, 2, 2000, 200, "passt_hop160"),
        ("passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt", 3200, 10, 2, 3200, 320, "passt_hop100"),
        ("passt-l-kd-ap.47.pt", 998, 10, 7, 1000, 99, "passt"),
    ]
    for name, tdim, stride, depth, max_length, table, preset in cases:
        theirs = peer_model(peer, frames=tdim, stride=stride, depth=depth, width=64, heads=1, seed=depth + stride)
        torch.save(theirs.state_dict(), tmp_path / name)
        ours = load_backbone("passt", tmp_path / name).eval()
        config = ours.config
        assert (config.max_length, config.time_positions, config.num_hidden_layers) == (max_length, table, depth), name
        assert (config.frequency_stride, config.time_stride, config.frontend_preset) == (stride, stride, preset), name
        spa = SPAConfig(backbone="passt", audio_config=config)
        assert spa.frontend == {**frontend_preset(preset), "max_frames": max_length}, name
        features = torch.randn(1, 300, 128)  # the first columns of the table
        with torch.no_grad():
            logits, pooled = theirs(features.transpose(1, 2)[:, None])
            output = ours(features).pooler_output
        torch.testing.assert_close(output, pooled, rtol=0, atol=1e-4)
        torch.testing.assert_close(ours.head(output), logits, rtol=0, atol=1e-4)


# -- release files: short names and hostile files ---------------------------------------------------------------


def test_short_name_is_pinned_and_offline_error_names_the_file(tmp_path, monkeypatch):
    release = RELEASES["passt-s-swa-ap476"]
    assert release.backbone == "passt" and release.filename == DEFAULT_FILE and release.licence == "apache-2.0"
    assert release.sha256 == "302903fa8c4aee817b11dc982da0b29aaf8d11a3e722420476d0a12c9db70c2c"
    monkeypatch.setenv("SPA_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = tmp_path / "checkpoints" / DEFAULT_FILE
    with pytest.raises(FileNotFoundError, match=rf"{target}.*downloads are off.*{release.url}"):
        load_backbone("passt", "passt-s-swa-ap476")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the release")
    with pytest.raises(CheckpointError, match="has sha256 .* damaged or not that release"):
        resolve_checkpoint("passt-s-swa-ap476")


def small_release(peer, path):
    torch.save(peer_model(peer, frames=200, depth=1, width=64, heads=1).state_dict(), path)
    return path


def test_hostile_and_foreign_files_are_refused(peer, tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    malicious = tmp_path / "malicious.pt"
    torch.save({"cls_token": torch.zeros(1), "payload": Payload()}, malicious)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_backbone("passt", malicious)
    assert not marker.exists()

    good = small_release(peer, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint, or truncated"):
        load_backbone("passt", truncated)

    cnn14 = tmp_path / "Cnn14_mAP=0.431.pth"  # a PANNs file: {"model": ...}
    torch.save({"iteration": 0, "model": {"conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}}, cnn14)
    with pytest.raises(CheckpointError, match=r"does not look like a PaSST checkpoint: 159 of its 159 weights"):
        load_backbone("passt", cnn14)

    state = torch.load(good, weights_only=True)
    state["blocks.0.attn.extra"] = state.pop("blocks.0.attn.qkv.bias")
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    expected = r"missing: blocks\.0\.attn\.qkv\.bias; unexpected: blocks\.0\.attn\.extra"
    with pytest.raises(CheckpointError, match=expected):
        load_backbone("passt", edited)
    state = torch.load(good, weights_only=True)
    state["freq_new_pos_embed"] = torch.zeros(1, 64, 7, 1)
    torch.save(state, edited)
    with pytest.raises(CheckpointError, match="7 rows matches none of PaSST's released strides"):
        load_backbone("passt", edited)


# -- frames, time table, patchout and masking (tiny) --------------------------------------------------------------


def tiny_backbone(**overrides) -> PaSSTBackbone:
    torch.manual_seed(0)
    return randomize_(PaSSTBackbone(PaSSTConfig(**{**TINY, **overrides})), seed=3)


def test_frames_and_time_table_mismatches_are_errors():
    assert PaSSTConfig().time_positions == 99 and PaSSTConfig().max_frames_covered == 1005
    with pytest.raises(ValueError, match="max_length=1100 frames make 109 time patches, .* 99 positions"):
        PaSSTConfig(max_length=1100, time_positions=99)
    config = PaSSTConfig(**TINY)
    with pytest.raises(ValueError, match="takes exactly 200 frames"):
        SPAConfig(backbone="passt", audio_config=config, frontend=frontend_preset("passt"))  # 1000 frames
    with pytest.raises(ValueError, match="frontend_hop_length=256"):
        PaSSTConfig(frontend_hop_length=256)
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match=r"21 time patches, .* 19 positions .* windows"):
        backbone(torch.randn(1, 220, 128))
    with pytest.raises(ValueError, match=r"\(batch, frames, 128\)"):
        backbone(torch.randn(1, 200, 64))


def test_shorter_inputs_use_the_first_columns_in_eval_and_a_random_offset_in_training():
    backbone = tiny_backbone(time_patchout=0, frequency_patchout=0)
    features = torch.randn(1, 100, 128)  # 9 of the 19 time positions
    with torch.no_grad():
        first = backbone(features).pooler_output
        table = backbone.time_new_pos_embed.clone()
        backbone.time_new_pos_embed[..., 9:] = 1e3  # positions an eval input of 9 columns must not use
        torch.testing.assert_close(backbone(features).pooler_output, first)
        backbone.time_new_pos_embed.copy_(table)
        backbone.train()
        outputs = []
        for seed in range(8):
            torch.manual_seed(seed)
            outputs.append(backbone(features).pooler_output)
    distinct = {round(float(o.sum()), 4) for o in outputs}
    assert len(distinct) > 2  # the offset varies
    assert any(torch.allclose(o, first, atol=1e-5) for o in outputs)  # offset 0 is the eval embedding
    longer = torch.randn(1, 230, 128)  # 22 columns: in training, cropped to the 19 of the table (frames 0-195)
    with torch.no_grad():
        torch.testing.assert_close(backbone(longer).pooler_output, backbone(longer[:, :196]).pooler_output)


def test_structured_patchout_in_training_only():
    backbone = tiny_backbone()
    features = torch.randn(3, 200, 128)  # 12 x 19 patches
    with torch.no_grad():
        eval_tokens = backbone(features, output_hidden_states=True).hidden_states[0].shape[1]
        backbone.train()
        train_tokens = backbone(features, output_hidden_states=True).hidden_states[0].shape[1]
        heavy = tiny_backbone(time_patchout=40, frequency_patchout=40).train()  # more than the grid
        heavy_tokens = heavy(features, output_hidden_states=True).hidden_states[0].shape[1]
        unstructured = tiny_backbone(time_patchout=0, frequency_patchout=0, unstructured_patchout=100).train()
        unstructured_tokens = unstructured(features, output_hidden_states=True).hidden_states[0].shape[1]
    assert eval_tokens == 2 + 12 * 19
    assert train_tokens == 2 + (12 - 2) * (19 - 5)
    assert heavy_tokens == 2 + 1  # at least one row and one column are kept
    assert unstructured_tokens == 2 + 12 * 19 - 100


def test_padding_is_masked_out_of_attention():
    """A clip padded in a batch (frame mask) gives what it gives alone, in eval and in training alike."""
    backbone = tiny_backbone(time_patchout=0, frequency_patchout=0)
    features = torch.randn(2, 200, 128)
    mask = torch.ones(2, 200, dtype=torch.bool)
    mask[1, 90:] = False  # 8 whole patch columns
    with torch.no_grad():
        batched = backbone(features, mask).pooler_output
        alone = backbone(features[1:, :90]).pooler_output
        unmasked = backbone(features).pooler_output
        torch.testing.assert_close(batched[1], alone[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batched[0], unmasked[0], rtol=0, atol=1e-5)
        assert (batched[1] - unmasked[1]).abs().max() > 1e-2  # without the mask the padding counts
        backbone.train()  # the full grid with a mask: same result (no patchout, no dropout, offset 0)
        torch.testing.assert_close(backbone(features, mask).pooler_output, batched, rtol=0, atol=1e-5)
        tiny = torch.zeros(1, 200, dtype=torch.bool)
        tiny[0, :5] = True  # less than one patch of audio: its first column still counts
        assert torch.isfinite(backbone.eval()(features[:1], tiny).pooler_output).all()


def test_attention_weights_and_hidden_states():
    backbone = tiny_backbone().eval()
    features = torch.randn(2, 200, 128)
    mask = torch.ones(2, 200, dtype=torch.bool)
    mask[1, 100:] = False
    with torch.no_grad():
        eager = backbone(features, mask, output_hidden_states=True, output_attentions=True)
        sdpa = backbone(features, mask)
    torch.testing.assert_close(eager.pooler_output, sdpa.pooler_output, rtol=0, atol=1e-5)
    assert len(eager.attentions) == 2 and len(eager.hidden_states) == 3
    tokens = 2 + 12 * 19
    assert eager.attentions[0].shape == (2, 2, tokens, tokens)
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(2, 2, tokens))
    columns = torch.arange(tokens - 2) % 19
    padded_keys = torch.cat([torch.tensor([False, False]), columns >= 9])  # 100 frames: 9 whole columns
    assert eager.attentions[0][1][..., padded_keys].abs().max() == 0
    assert eager.attentions[0][0][..., padded_keys].min() > 0


# -- the SPA model on PaSST (tiny) --------------------------------------------------------------------------------


def test_tiny_model_uses_the_passt_frontend(tiny_model):
    frontend = tiny_model.config.frontend
    assert frontend == {**frontend_preset("passt"), "max_frames": 200}
    assert tiny_model.config.audio_config.model_type == "spa_passt"


def test_gradients_flow_and_the_original_head_is_frozen(tiny_model, batch):
    waves, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model.train()
    model(waves, mask, labels=labels).loss.backward()
    backbone = model.spa.backbone
    for name in ("patch_embed.proj", "blocks.0.attn.qkv", "blocks.1.mlp.fc2", "norm"):
        assert backbone.get_submodule(name).weight.grad.abs().sum() > 0, name
    for name in ("cls_token", "dist_token", "time_new_pos_embed", "freq_new_pos_embed", "new_pos_embed"):
        assert getattr(backbone, name).grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for n in ("head", "head_dist") for p in
               backbone.get_submodule(n).parameters())  # fmt: skip
    assert model.classifier.weight.grad.abs().sum() > 0


def save(model, path):
    model.save_pretrained(path)
    SPAFeatureExtractor(sampling_rate=RATE, max_length_s=2.0).save_pretrained(path)
    return path


def test_save_load_round_trip(tiny_model, batch, tmp_path):
    waves, mask, _ = batch
    path = save(tiny_model, tmp_path / "passt")
    config = json.loads((path / "config.json").read_text())
    assert config["backbone"] == "passt" and config["audio_config"]["model_type"] == "spa_passt"
    with torch.no_grad():
        expected = tiny_model(waves, mask).logits
        loaded = AutoModel.from_pretrained(path).eval()
        torch.testing.assert_close(loaded(waves, mask).logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(loaded.audioset_scores(waves, mask), tiny_model.audioset_scores(waves, mask))


def test_remote_code_works_without_the_package(tiny_model, tmp_path):
    path = save(tiny_model, tmp_path / "passt")
    assert (path / "backbone_passt.py").is_file()
    waves = torch.cat([audio(1.5, seed=7), audio(1.5, seed=8)]).numpy()
    body = """
    extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
    inputs = extractor(list(arrays["waves"]), sampling_rate=32000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    result = {"backbone": type(model.spa.backbone).__name__, "logits": logits.tolist()}
    """
    result = run_without_package(path, body, tmp_path, waves=waves)
    assert result["backbone"] == "PaSSTBackbone"
    inputs = SPAFeatureExtractor.from_pretrained(path)(list(waves), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        expected = tiny_model(**inputs).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-6)


def test_torch_compile_and_export():
    backbone = tiny_backbone(num_hidden_layers=1).eval()
    features = torch.randn(2, 200, 128)
    mask = torch.ones(2, 200, dtype=torch.bool)
    mask[1, 120:] = False
    compiled = torch.compile(backbone, fullgraph=True)  # no graph break in eval
    with torch.no_grad():
        expected = backbone(features, mask).pooler_output
        torch.testing.assert_close(compiled(features, mask).pooler_output, expected, rtol=1e-4, atol=1e-5)
        exported = torch.export.export(backbone, (features, mask)).module()
        torch.testing.assert_close(exported(features, mask).pooler_output, expected, rtol=1e-4, atol=1e-5)


def test_bfloat16_autocast_with_the_frontend_in_float32(tiny_model, batch):
    waves, mask, labels = batch
    seen = []
    hook = tiny_model.spa.frontend.register_forward_hook(lambda module, args, out: seen.append(out[0].dtype))
    try:
        with torch.no_grad():
            reference = tiny_model(waves, mask).logits
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = tiny_model(waves, mask).logits
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.float32]
    assert torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(waves, mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.spa.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, batch, monkeypatch):
    waves, mask, labels = batch
    calls = []
    forward = PaSSTMlp.forward
    monkeypatch.setattr(PaSSTMlp, "forward", lambda self, hidden: calls.append(1) or forward(self, hidden))
    grads = []
    for checkpointing in (False, True):
        model = SPAForAudioClassification(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        calls.clear()
        torch.manual_seed(0)  # the same patchout
        model(waves, mask, labels=labels).loss.backward()
        assert len(calls) == (4 if checkpointing else 2)  # two blocks, recomputed in the backward pass
        grads.append(model.spa.backbone.blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_lora(tiny_model, batch, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    waves, mask, labels = batch
    base_path = save(tiny_model, tmp_path / "base")
    model = AutoModel.from_pretrained(base_path)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["attn.qkv", "attn.proj"]))
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in lora.named_parameters() if ".lora_A" in name}
    assert wrapped == {f"base_model.model.spa.backbone.blocks.{i}.attn.{m}" for i in (0, 1) for m in ("qkv", "proj")}
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    lora.train()
    lora(waves, mask, labels=labels).loss.backward()
    grads = {name: p.grad for name, p in lora.named_parameters() if "lora_" in name}
    assert all(g is not None for g in grads.values())
    assert all(grad.abs().sum() > 0 for name, grad in grads.items() if "lora_B" in name)
    torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=1.0).step()
    lora.eval()
    with torch.no_grad():
        tuned = lora(waves, mask).logits
        assert (tuned - tiny_model(waves, mask).logits).abs().max() > 1e-4
    lora.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModel.from_pretrained(base_path), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(waves, mask).logits, tuned, rtol=0, atol=1e-6)
