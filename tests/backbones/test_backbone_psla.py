"""The PSLA backbone against PSLA's own code path: efficientnet-pytorch 0.7.0 (`EfficientNet.from_name(
"efficientnet-b2", in_channels=1).extract_features`) plus the attention head of PSLA's published formula, and
torchaudio's Kaldi fbank with PSLA's arguments; the converter, hostile files, and the model conventions."""

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_pytorch import EfficientNet
from peer_utils import randomize_, torchaudio_kaldi
from recipe_loader import load_recipe
from remote_code import run_without_package
from torch import nn
from transformers import AutoModel, EfficientNetModel

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.backbone_psla import PSLABackbone, PSLAConfig, static_same_padding
from modeling_spa.backbones import backbone_spec
from modeling_spa.conversion import FAMILY_LICENCES, CheckpointError, load_backbone
from modeling_spa.frontend import LogMelFrontend, frontend_preset
from modeling_spa.windowing import window_settings

REPO = Path(__file__).resolve().parents[2]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RATE = 16000
FULL_SAMPLES = 400 + 1055 * 160  # exactly PSLA's 1056 frames
TINY = PSLAConfig(  # three stages, four blocks, two of them strided: the feature map is (mels / 8, frames / 8)
    width_coefficient=0.25,
    depth_coefficient=1.0,
    kernel_sizes=[3, 3, 5],
    in_channels=[32, 16, 24],
    out_channels=[16, 24, 40],
    strides=[1, 2, 2],
    num_block_repeats=[1, 2, 1],
    expand_ratios=[1, 6, 6],
    depthwise_padding=[],
    hidden_dim=320,
    num_mel_bins=64,
    max_length=200,
    attention_heads=2,
    num_audioset_classes=10,
)
TINY_FRONTEND = {**frontend_preset("psla"), "n_mels": 64, "max_frames": 200}


@torch.no_grad()
def calibrated_(module: nn.Module, run: Callable[[], object], seed: int) -> nn.Module:
    """`randomize_`, then BatchNorm statistics measured on the inputs that `run()` passes.

    With `randomize_`'s random statistics, every MBConv block shrinks the input-dependent part of its output about
    tenfold (swish, the squeeze-excite gate, norms that do not match their inputs), and after EfficientNet's seven
    stages the feature map hardly depends on the input: transformers' padding error then shows as 7e-7, so a
    comparison proves nothing. Measured statistics normalise each layer as in a trained network (feature maps of
    scale ~1, which depend on the clip), and they differ per channel, so a misplaced statistic still shows. The
    affine parameters and all weights stay `randomize_`'s.
    """
    randomize_(module, seed)
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: the statistics of the batch that `run` passes
    module.train()
    run()
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return module.eval()


# -- PSLA's own code path ------------------------------------------------------------------------------------------


def psla_file_state(
    peer: EfficientNet, heads: int, classes: int, seed: int, averaged: bool = True
) -> dict[str, torch.Tensor]:
    """A state dict laid out as PSLA's released files: `module.` (DataParallel), efficientnet-pytorch names with the
    unused ImageNet `_fc`, random attention heads, and (`averaged`) float `num_batches_tracked` as weight averaging
    leaves them."""
    generator = torch.Generator().manual_seed(seed)
    channels = peer._conv_head.out_channels
    state = {f"module.effnet.{key}": value.clone() for key, value in peer.state_dict().items()}
    state = {key: v.float() if averaged and key.endswith("num_batches_tracked") else v for key, v in state.items()}
    state["module.effnet._fc.weight"] = torch.randn(1000, channels, generator=generator)
    state["module.effnet._fc.bias"] = torch.randn(1000, generator=generator)
    for kind in ("att", "cla"):
        for head in range(heads):
            weight = torch.randn(classes, channels, 1, 1, generator=generator) / channels**0.5
            state[f"module.attention.{kind}.{head}.weight"] = weight
            state[f"module.attention.{kind}.{head}.bias"] = 0.5 * torch.randn(classes, generator=generator)
    state["module.attention.head_weight"] = 1.0 / heads + 0.1 * torch.randn(heads, generator=generator)
    return state


def psla_forward(peer: EfficientNet, state: dict, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PSLA's EffNetAttention.forward: (B, frames, mels) -> feature map (B, C, 4, T') and the scores of its
    MHeadAttention (att/cla 1×1 convolutions, sigmoid, clamp, normalise over time, weighted sum of the heads)."""
    feature_map = peer.extract_features(features.unsqueeze(1).transpose(2, 3))
    x = nn.functional.avg_pool2d(feature_map, (4, 1)).transpose(2, 3)  # (B, C, T', 1)
    heads = state["module.attention.head_weight"]
    out = []
    for h in range(len(heads)):
        att = nn.functional.conv2d(
            x, state[f"module.attention.att.{h}.weight"], state[f"module.attention.att.{h}.bias"]
        )
        cla = nn.functional.conv2d(
            x, state[f"module.attention.cla.{h}.weight"], state[f"module.attention.cla.{h}.bias"]
        )
        att = torch.clamp(torch.sigmoid(att)[:, :, :, 0], 1e-7, 1.0 - 1e-7)
        cla = torch.sigmoid(cla)[:, :, :, 0]
        out.append(torch.sum(att / torch.sum(att, dim=2)[:, :, None] * cla, dim=2) * heads[h])
    return feature_map, torch.stack(out, dim=0).sum(dim=0)


def psla_fbank(waveform: np.ndarray, target_length: int = 1056) -> torch.Tensor:
    """PSLA's AudiosetDataset._wav2fbank + normalisation (eval: no SpecAugment, no mixup, no noise)."""
    kaldi = torchaudio_kaldi()
    wave = torch.from_numpy(waveform)[None]
    wave = wave - wave.mean()
    fbank = kaldi.fbank(
        wave,
        htk_compat=True,
        sample_frequency=RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    p = target_length - fbank.shape[0]
    fbank = nn.functional.pad(fbank, (0, 0, 0, p)) if p > 0 else fbank[:target_length]
    return (fbank - -4.6476) / 4.5699


def masked_time_mean(feature_map: torch.Tensor, real_frames: int) -> torch.Tensor:
    """The SPA pooled embedding, from the definition: frequency mean, then the mean over the time steps (32 frames
    each) that hold at least one real frame."""
    steps = -(-real_frames // 32)
    return feature_map.mean(dim=2)[:, :, :steps].mean(dim=2)


def fbank_batch(frames: int, seeds: tuple[int, ...], mels: int = 128) -> torch.Tensor:
    """Normalised PSLA features (B, frames, mels) of noisy tones, for measuring BatchNorm statistics."""
    waves = torch.from_numpy(np.stack([clip(400 + (frames - 1) * 160, seed=s) for s in seeds]))
    preset = {**frontend_preset("psla"), "n_mels": mels, "max_frames": frames}
    return LogMelFrontend(**preset)(waves)[0]


def calibrated_peer(name: str, frames: int, seed: int) -> EfficientNet:
    torch.manual_seed(seed)
    peer = EfficientNet.from_name(name, in_channels=1)
    peer._global_params = peer._global_params._replace(drop_connect_rate=0.0)  # no random drops while measuring
    pixels = fbank_batch(frames, (seed,)).unsqueeze(1).transpose(2, 3)
    return calibrated_(peer, lambda: peer.extract_features(pixels), seed)


@pytest.fixture(scope="module")
def b2_peer():
    return calibrated_peer("efficientnet-b2", 1056, seed=3)


@pytest.fixture(scope="module")
def b2_file(b2_peer, tmp_path_factory):
    state = psla_file_state(b2_peer, heads=4, classes=527, seed=4)
    path = tmp_path_factory.mktemp("psla") / "as_mdl_0_wa.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def mids(mid_of):
    names = ["Speech", "Male speech, man speaking", "Dog", "Bark", "Cat", "Siren", "Music"]
    return [mid_of[name] for name in names]


def clip(samples: int, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    wave = 0.1 * rng.standard_normal(samples) + 0.3 * np.sin(2 * np.pi * 700 * t) + offset
    return wave.astype(np.float32)


# -- equivalence -----------------------------------------------------------------------------------------------------


def test_converted_checkpoint_equals_psla(b2_peer, b2_file, mids, ontology):
    path, state = b2_file
    model = SPAForAudioClassification.from_backbone(
        "psla",
        pretrained_backbone=str(path),
        label_mids=mids,
        ontology=ontology,
        text_encoder=MINILM,
        projection_dim=16,
    ).eval()
    assert model.config.pretrained_backbone == "as_mdl_0_wa.pth" and model.config.frontend["max_frames"] == 1056
    assert not any(p.requires_grad for p in model.spa.backbone.attention.parameters())  # frozen: not in the loss
    figures = {}
    # The full 1056 frames, and a 4 s clip padded (waveform zeros, masked frames) as the SPA front-end pads it.
    for real in (FULL_SAMPLES, 4 * RATE):
        wave = torch.zeros(1, FULL_SAMPLES)
        wave[0, :real] = torch.from_numpy(clip(real, seed=real))
        mask = (torch.arange(FULL_SAMPLES) < real).long()[None]
        with torch.no_grad():
            features, frame_mask = model.spa.frontend(wave, mask)
            feature_map, scores = psla_forward(b2_peer, state, features)
            ours_scores = model.audioset_scores(wave, mask)
            pooled = model.spa(wave, mask).pooled_output
        frames = int(frame_mask.sum())
        assert features.shape == (1, 1056, 128) and feature_map.shape == (1, 1408, 4, 33)
        figures[frames] = {
            "audioset_scores": (ours_scores - scores).abs().max().item(),
            "pooled": (pooled - masked_time_mean(feature_map, frames)).abs().max().item(),
        }
        assert figures[frames]["audioset_scores"] < 1e-4 and figures[frames]["pooled"] < 1e-4, figures
        assert scores.std() > 0.02 and pooled.std() > 0.02  # randomised weights: far from constant outputs
    print("PSLA max |ours - peer| by real frames:", json.dumps(figures))
    # Why the padding fix: with transformers' right/bottom padding (0, 1, 0, 1) of the stem and block 2, the same
    # weights give another feature map (on 256 frames: the error is the same everywhere).
    backbone = model.spa.backbone
    crop = features[:, :256]
    with torch.no_grad():
        fixed = backbone.feature_map(crop)[0]
        backbone.efficientnet.embeddings.padding = nn.ZeroPad2d((0, 1, 0, 1))
        backbone.efficientnet.encoder.blocks[2].depthwise_conv.depthwise_conv_pad = nn.ZeroPad2d((0, 1, 0, 1))
        error = (backbone.feature_map(crop)[0] - fixed).abs().max()
    print(f"transformers' padding: max |difference| {error:.3f}, feature scale {fixed.abs().max():.2f}")
    assert error > 0.1


def test_padding_is_derived_from_the_config():
    # transformers pads right and bottom only where the total "same" padding is odd; 0.7.0 pads both sides.
    plain = EfficientNetModel(TINY)
    assert plain.embeddings.padding.padding == (0, 1, 0, 1)
    assert plain.encoder.blocks[1].depthwise_conv.depthwise_conv_pad.padding == (0, 1, 0, 1)
    # efficientnet-pytorch 0.7.0 at image size 260: stem and block 2 (kernel 3, stride 2) pad 1 on every side.
    assert static_same_padding(260, 3, 2) == 1 and static_same_padding(130, 3, 2) == 1
    assert static_same_padding(65, 5, 2) == 2 and static_same_padding(33, 3, 2) == 1
    backbone = PSLABackbone(PSLAConfig())
    strided = [
        (i, b.depthwise_conv.depthwise_conv_pad.padding)
        for i, b in enumerate(backbone.efficientnet.encoder.blocks)
        if b.depthwise_conv.stride == 2
    ]
    assert backbone.efficientnet.embeddings.padding.padding == (1, 1, 1, 1)
    assert strided == [(2, (1, 1, 1, 1)), (5, (2, 2, 2, 2)), (8, (1, 1, 1, 1)), (16, (2, 2, 2, 2))]
    assert backbone.time_reduction == 32
    norms = [m for m in backbone.efficientnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.momentum for m in norms} == {0.01}  # efficientnet-pytorch's 1 - 0.99, the expansion norms included


def test_registry_entry_and_default_frontend():
    spec = backbone_spec("psla")
    config = SPAConfig(backbone="psla")
    assert config.frontend == {**frontend_preset("psla"), "max_frames": 1056} and config.audio_config.hidden_dim == 1408
    assert spec.pooled_size(config.audio_config) == 1408 and FAMILY_LICENCES["psla"] == "bsd-3-clause"
    assert window_settings(config).length == 400 + 1055 * 160  # long clips are scored in windows of 1056 frames
    short = SPAConfig(backbone="psla", audio_config={**PSLAConfig().to_dict(), "max_length": 500})
    assert short.frontend["max_frames"] == 500
    assert short.audio_config.model_type == "spa_psla" and short.audio_config.attention_heads == 4


def test_sibling_checkpoints_read_their_sizes_from_the_file(tmp_path):
    # An EfficientNet-B0 with 2 heads and 200 classes (PSLA's FSD50K head size): variant, heads and classes come from
    # the file, and the 0.7.0 padding follows its image size (224).
    peer = calibrated_peer("efficientnet-b0", 200, seed=5)
    state = psla_file_state(peer, heads=2, classes=200, seed=6, averaged=False)  # a single model: integer counters
    torch.save(state, tmp_path / "fsd_mdl.pth")
    backbone = load_backbone("psla", tmp_path / "fsd_mdl.pth")
    config = backbone.config
    assert (config.width_coefficient, config.depth_coefficient, config.image_size) == (1.0, 1.0, 224)
    assert (config.hidden_dim, config.attention_heads, config.num_audioset_classes) == (1280, 2, 200)
    features = fbank_batch(200, (7,))
    with torch.no_grad():
        feature_map, scores = psla_forward(peer, state, features)
        ours = backbone.audioset_scores(features)
        pooled = backbone(features).pooler_output
    assert ours.shape == (1, 200)
    torch.testing.assert_close(ours, scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(pooled, feature_map.mean(dim=(2, 3)), rtol=0, atol=1e-4)


@pytest.mark.parametrize("seconds, offset", [(10.0, 0.0), (3.3, 0.25), (12.0, -0.1)])
def test_psla_frontend_matches_psla_fbank(seconds, offset):
    wave = clip(round(seconds * RATE), seed=int(seconds * 10), offset=offset)
    expected = psla_fbank(wave)
    padded = torch.zeros(1, max(len(wave), FULL_SAMPLES))
    padded[0, : len(wave)] = torch.from_numpy(wave)
    mask = (torch.arange(padded.shape[1]) < len(wave)).long()[None]
    features, frame_mask = LogMelFrontend(**frontend_preset("psla"))(padded, mask)
    assert features.shape == (1, 1056, 128)
    assert int(frame_mask.sum()) == min(1056, 1 + (len(wave) - 400) // 160)
    difference = (features[0] - expected).abs()
    print(f"psla front-end {seconds} s, offset {offset}: max {difference.max():.2e}, mean {difference.mean():.2e}")
    assert difference.max() < 1e-3 and difference.mean() < 2e-6


# -- the converter and hostile files --------------------------------------------------------------------------------


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_hostile_and_wrong_files_give_clear_errors(tmp_path, b2_file):
    path, state = b2_file
    malicious = tmp_path / "malicious.pth"
    torch.save({"module.effnet._conv_stem.weight": torch.zeros(1), "x": Exploit()}, malicious)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_backbone("psla", malicious)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_backbone("psla", truncated)
    passt = tmp_path / "passt.pt"  # another family's layout (PaSST)
    torch.save({"cls_token": torch.zeros(1, 1, 768), "blocks.0.attn.qkv.weight": torch.zeros(2304, 768)}, passt)
    with pytest.raises(CheckpointError, match="does not look like a PSLA checkpoint"):
        load_backbone("psla", passt)
    edited = dict(state)
    del edited["module.effnet._blocks.3._bn2.running_var"]
    edited["module.effnet._blocks.3._extra.weight"] = torch.zeros(1)
    torch.save(edited, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        load_backbone("psla", tmp_path / "edited.pth")
    message = str(error.value)
    assert "missing: efficientnet.encoder.blocks.3.projection.project_bn.running_var" in message
    assert "unexpected: efficientnet._blocks.3._extra.weight" in message
    with pytest.raises(FileNotFoundError, match=r"no short name.*as_mdl_0_wa\.pth: https://www\.dropbox\.com/s/ie"):
        load_backbone("psla", "as_mdl_0_wa")


def test_unknown_efficientnet_variant_is_named(tmp_path):
    peer = EfficientNet.from_name("efficientnet-b0", in_channels=1, width_coefficient=0.5)
    torch.save(psla_file_state(peer, heads=1, classes=3, seed=0), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="640-channel head convolution and 16 blocks is none of the variants"):
        load_backbone("psla", tmp_path / "odd.pth")


# -- the model conventions, on a tiny config ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(mids, ontology):
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "psla",
        TINY,
        label_mids=mids,
        ontology=ontology,
        text_encoder=MINILM,
        projection_dim=16,
        spa_alpha=0.5,
        frontend=TINY_FRONTEND,
    )
    backbone = model.spa.backbone
    features = fbank_batch(200, (11, 12, 13), mels=64)
    calibrated_(backbone, lambda: backbone(features), seed=2)
    with torch.no_grad():
        backbone.attention.head_weight.fill_(1 / TINY.attention_heads)  # PSLA's init: the scores stay in (0, 1)
    return model.eval()


@pytest.fixture
def batch():
    waves = torch.from_numpy(np.stack([clip(2 * RATE, seed=s) for s in range(3)]))
    mask = torch.ones_like(waves, dtype=torch.long)
    mask[2, RATE:] = 0
    waves[2, RATE:] = 0
    labels = torch.zeros(3, 7)
    labels[0, [0, 1]] = 1
    labels[1, 4] = 1
    return waves, mask, labels


def test_tiny_model_shapes_and_masked_pooling(tiny_model, batch):
    waves, mask, _ = batch
    assert tiny_model.config.frontend["max_frames"] == 200 and tiny_model.config.frontend["normalize_std"] == 4.5699
    out = tiny_model.spa(waves, mask, output_hidden_states=True)
    assert out.pooled_output.shape == (3, 320) and out.attentions is None
    assert len(out.hidden_states) == 1 + TINY.num_blocks == 5 and out.hidden_states[0].shape == (3, 8, 32, 100)
    scores = tiny_model.audioset_scores(waves, mask)
    assert scores.shape == (3, 10) and bool(((scores > 0) & (scores < 1)).all())
    assert (scores[0] - scores[1]).abs().max() > 1e-3  # calibrated weights: the scores depend on the clip
    # The third clip has 98 real frames of 200: its embedding averages the 13 time steps (8 frames each) that hold
    # them; the first has 198, in all 25 steps.
    with torch.no_grad():
        features, frame_mask = tiny_model.spa.frontend(waves, mask)
        feature_map = tiny_model.spa.backbone(features).last_hidden_state
    assert frame_mask.sum(dim=1).tolist() == [198, 198, 98] and feature_map.shape == (3, 320, 8, 25)
    torch.testing.assert_close(out.pooled_output[2], feature_map[2].mean(dim=1)[:, :13].mean(dim=1))
    torch.testing.assert_close(out.pooled_output[0], feature_map[0].mean(dim=(1, 2)))
    assert (out.pooled_output[2] - feature_map[2].mean(dim=(1, 2))).abs().max() > 1e-3  # the mask matters


def test_gradients_flow_and_the_original_head_stays_frozen(tiny_model, batch):
    waves, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model.train()
    model(waves, mask, labels=labels).loss.backward()
    backbone = "spa.backbone.efficientnet."
    for name in (f"{backbone}embeddings.convolution", f"{backbone}encoder.blocks.3.expansion.expand_conv",
                 f"{backbone}encoder.top_conv", "spa.audio_projection", "classifier", "text_projection"):  # fmt: skip
        assert model.get_submodule(name).weight.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.spa.backbone.attention.parameters())


def test_drop_connect_drops_whole_samples(tiny_model):
    block = tiny_model.spa.backbone.efficientnet.encoder.blocks[2]  # the second block of stage 2: residual
    assert block.projection.apply_dropout and block.projection.dropout.p == pytest.approx(0.2 * 2 / 4)
    drop = type(block.projection.dropout)(0.5).train()
    torch.manual_seed(0)
    out = drop(torch.ones(64, 3, 4, 5))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert bool((per_sample == per_sample[:, :1]).all())  # one decision per sample, as efficientnet-pytorch


def test_save_load_round_trip(tiny_model, batch, tmp_path):
    waves, mask, _ = batch
    tiny_model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded.spa.backbone).__name__ == "PSLABackbone"
    pads = [b.depthwise_conv.depthwise_conv_pad.padding for b in loaded.spa.backbone.efficientnet.encoder.blocks]
    assert pads[1] == (1, 1, 1, 1) and pads[3] == (2, 2, 2, 2)  # the strided blocks, padded as 0.7.0 pads them
    with torch.no_grad():
        assert torch.equal(loaded(waves, mask).logits, tiny_model(waves, mask).logits)
        assert torch.equal(loaded.audioset_scores(waves, mask), tiny_model.audioset_scores(waves, mask))
    # No attention in the backbone: any implementation is accepted (a nested EfficientNetModel would refuse sdpa).
    sdpa = SPAForAudioClassification.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    with torch.no_grad():
        assert torch.equal(sdpa(waves, mask).logits, tiny_model(waves, mask).logits)
    # A new model takes SPA's initialisation, not transformers' EfficientNet one (norm scales drawn from N(0, 0.02)).
    fresh = SPAForAudioClassification(tiny_model.config).spa.backbone.efficientnet
    assert bool((fresh.embeddings.batchnorm.weight == 1).all()) and fresh.encoder.top_conv.weight.std() > 0.05


def test_remote_code_works_without_the_package(tiny_model, tmp_path):
    path = tmp_path / "ckpt"
    tiny_model.save_pretrained(path)
    SPAFeatureExtractor(sampling_rate=RATE, max_length_s=2.0).save_pretrained(path)
    assert (path / "backbone_psla.py").is_file()
    waves = np.stack([clip(RATE, seed=8), clip(RATE, seed=9)])
    body = """
    extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
    inputs = extractor(list(arrays["waves"]), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        scores = model.audioset_scores(**inputs)
    backbone = type(model.spa.backbone)
    result = {"backbone": backbone.__module__ + "." + backbone.__name__, "logits": logits.tolist(),
              "scores": scores.tolist()}
    """
    result = run_without_package(path, body, tmp_path, waves=waves)
    assert result["backbone"].endswith("backbone_psla.PSLABackbone") and "modeling_spa" not in result["backbone"]
    inputs = SPAFeatureExtractor.from_pretrained(path)(list(waves), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(torch.tensor(result["logits"]), tiny_model(**inputs).logits)
        assert torch.equal(torch.tensor(result["scores"]), tiny_model.audioset_scores(**inputs))


def test_gradient_checkpointing_recomputes_the_blocks(tiny_model, batch):
    waves, mask, labels = batch
    grads, calls = {}, {}
    for checkpointing in (False, True):
        model = SPAForAudioClassification(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        if checkpointing:
            model.gradient_checkpointing_enable()
        blocks = model.spa.backbone.efficientnet.encoder.blocks
        assert all(b.gradient_checkpointing == checkpointing for b in blocks)
        calls[checkpointing] = 0

        def count(*_, flag=checkpointing):
            calls[flag] += 1

        blocks[1].depthwise_conv.register_forward_hook(count)  # inside the block: runs again when recomputed
        model.train()
        torch.manual_seed(0)  # the same drop connect decisions in both runs
        model(waves, mask, labels=labels).loss.backward()
        grads[checkpointing] = model.spa.backbone.efficientnet.embeddings.convolution.weight.grad
    assert calls == {False: 1, True: 2}
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


def test_torch_compile_and_bf16_autocast(tiny_model, batch):
    waves, mask, _ = batch
    # Two blocks (one strided) keep inductor's compilation short; the whole forward compiles as one graph.
    config = PSLAConfig(**{**TINY.to_dict(), "kernel_sizes": [3, 5], "in_channels": [32, 16], "out_channels": [16, 24],
                           "strides": [1, 2], "num_block_repeats": [1, 1], "expand_ratios": [1, 6]})  # fmt: skip
    backbone = PSLABackbone(config)
    features, frame_mask = tiny_model.spa.frontend(waves, mask)
    calibrated_(backbone, lambda: backbone(features), seed=4)
    with torch.no_grad():
        eager = backbone(features, frame_mask).pooler_output
        compiled = torch.compile(backbone, fullgraph=True)(features, frame_mask).pooler_output
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = tiny_model(waves, mask).logits
        pooled = tiny_model.spa(waves, mask).pooled_output
    assert pooled.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    reference = tiny_model.spa(waves, mask).pooled_output
    assert torch.nn.functional.cosine_similarity(pooled.float(), reference).min() > 0.99


def test_lora_on_the_pointwise_convolutions(tiny_model, batch):
    from peft import LoraConfig, get_peft_model

    waves, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    config = LoraConfig(r=4, target_modules=["expand_conv", "project_conv"], modules_to_save=["classifier"])
    lora = get_peft_model(model, config)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    lora.train()
    lora(waves, mask, labels=labels).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_B" in n)


def test_recipe_config_parses():
    train = load_recipe("train")
    model_args, data_args, _, train_args = train.parse_arguments(
        [str(REPO / "recipes" / "configs" / "psla_audioset.yaml")]
    )
    assert model_args.backbone == "psla" and model_args.pretrained_backbone.endswith("as_mdl_0_wa.pth")
    assert (train_args.batch_size, train_args.backbone_learning_rate, train_args.num_epochs) == (100, 1e-4, 30)
    assert train_args.weight_decay == 5e-7 and train_args.mixed_precision == "no" and data_args.max_length_s == 10.0
