"""transformers' speech encoders as SPA's backbone ("hub"): every family of transformers' audio-classification mapping
but AST, each as a tiny random checkpoint saved as transformers saves it and loaded by path.

Against transformers' own classes: the front-end equals the family's feature extractor (on synthetic clips and, where
the real recordings are cached, on real ones), the pooled embedding equals the masked mean of `AutoModel`'s last
hidden state under the family's attention-mask convention; then the SPA contract (save and reload, remote code without
the package, windows) and training (layer-wise decay, a frozen feature encoder, gradient checkpointing, bf16,
torch.compile, LoRA).
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from remote_code import run_without_package
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    WhisperConfig,
    WhisperFeatureExtractor,
)

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.backbone_hub import HUB_FAMILIES, LORA_TARGETS, HubBackbone
from modeling_spa.conversion import CheckpointError, load_backbone
from modeling_spa.data import decode_audio, load_audioset
from modeling_spa.files import cache_dir
from modeling_spa.frontend import frontend_preset
from modeling_spa.frontends import build_frontend, numpy_float32_sum
from modeling_spa.training.optimization import layer_depths, parameter_groups
from modeling_spa.windowing import aggregate_logits, window_settings, window_starts

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RATE = 16000
TOLERANCE = 1e-5
# The real-recording build (recipes/build_real_sounds.py's `sources`), as the export tests find it.
REAL_SOURCES = Path(os.environ.get("SPA_REAL_SOUNDS", Path(__file__).parents[2] / "outputs/real_sounds/sources"))

# Tiny configs: two layers of width 16, a three-layer CNN of receptive field 40 samples and stride 20.
CNN = {"conv_dim": (16, 16, 16), "conv_stride": (5, 2, 2), "conv_kernel": (10, 3, 3), "num_conv_pos_embeddings": 8,
       "num_conv_pos_embedding_groups": 2}  # fmt: skip
LAYERS = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 24}
# Each family with its checkpoints' convention: group-norm CNNs (base models) take no attention mask, layer-norm
# ones (large models, stable layer norm) do.
TINY = {
    "wav2vec2": {**CNN, **LAYERS, "feat_extract_norm": "group"},
    "hubert": {**CNN, **LAYERS, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
    "wavlm": {**CNN, **LAYERS, "feat_extract_norm": "group", "num_buckets": 16, "max_bucket_distance": 32},
    "data2vec-audio": {**CNN, **LAYERS, "num_conv_pos_embeddings": 3, "conv_pos_kernel_size": 5},
    "sew": {**CNN, **LAYERS, "squeeze_factor": 2},
    "sew-d": {**CNN, **LAYERS, "squeeze_factor": 2, "position_buckets": 16, "max_position_embeddings": 64},
    "unispeech": {**CNN, **LAYERS, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
    "unispeech-sat": {**CNN, **LAYERS, "feat_extract_norm": "group"},
    "wav2vec2-conformer": {
        **CNN,
        **LAYERS,
        "feat_extract_norm": "layer",
        "conv_depthwise_kernel_size": 3,
        "position_embeddings_type": "relative",
    },
    "wav2vec2-bert": {
        **LAYERS,
        "feature_projection_input_dim": 160,
        "conv_depthwise_kernel_size": 3,
        "position_embeddings_type": "relative_key",
        "left_max_position_embeddings": 16,
        "right_max_position_embeddings": 4,
    },
    # 1 s of input (50 positions, 100 frames) instead of 30 s.
    "whisper": {
        "num_mel_bins": 80,
        "d_model": 16,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 24,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 24,
        "max_source_positions": 50,
        "max_target_positions": 16,
    },
}
# No dropout, LayerDrop or SpecAugment where a test compares two training passes.
DETERMINISTIC = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
                 "layerdrop": 0.0, "mask_time_prob": 0.0}  # fmt: skip


def tiny_config(family: str, **overrides):
    return AutoConfig.for_model(family, **{**TINY[family], **overrides})


def family_extractor(family: str, config, do_normalize: bool = True):
    """The family's own feature extractor as its checkpoints configure it, for a tiny config."""
    if family == "whisper":
        return WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=2 * config.max_source_positions
                                       * 160 // RATE)  # fmt: skip
    if family == "wav2vec2-bert":
        return SeamlessM4TFeatureExtractor()
    masks = getattr(config, "feat_extract_norm", "layer") != "group"
    return Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=masks)


def clips() -> list[np.ndarray]:
    """Three clips of different lengths (none a multiple of a hop), all within the tiny Whisper's 1 s: noise and a
    chirp, a quiet start, a decaying noise burst on a DC offset. (Stationary tones are in
    `test_w2v_bert_fbank_on_a_tone_is_its_formula_in_double_precision`.)"""
    rng = np.random.default_rng(0)
    t = np.arange(15013) / RATE
    chirp = 0.2 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    quiet = np.concatenate([1e-4 * rng.standard_normal(3000), 0.3 * rng.standard_normal(6611)])
    burst = 0.1 + 0.5 * np.exp(-np.arange(4003) / 1500) * rng.standard_normal(4003)
    return [clip.astype(np.float32) for clip in (chirp, quiet, burst)]


def padded(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = SPAFeatureExtractor(sampling_rate=RATE, max_length_s=None)(waves, sampling_rate=RATE, return_tensors="pt")
    return inputs["input_values"], inputs["attention_mask"]


def package_recordings() -> list[np.ndarray]:
    """A few recordings from the Debian packages (recipes/build_real_sounds.py's cache), at 16 kHz through the
    house's reader and mix-down: a drum loop, a desktop sound, 8 kHz speech, vinyl hiss, an animal sound."""
    root = cache_dir() / "real_sounds" / "extracted"
    names = ["sonic-pi-samples/usr/share/sonic-pi/samples/loop_amen.flac",
             "sound-theme-freedesktop/usr/share/sounds/freedesktop/stereo/camera-shutter.oga",
             "asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en_US_f_Allison/cancelled.wav",
             "sonic-pi-samples/usr/share/sonic-pi/samples/vinyl_hiss.flac",
             "scratch/usr/share/scratch/Media/Sounds/Animal/Dog1.wav"]  # fmt: skip
    if not all((root / name).is_file() for name in names):
        return []
    return [decode_audio({"path": str(root / name), "bytes": None}, RATE, name) for name in names]


def built_recordings(clips: int = 4) -> list[np.ndarray]:
    """The first clips of the real-recording build's test split (recipes/build_real_sounds.py; SPA_REAL_SOUNDS)."""
    if not (REAL_SOURCES / "data").is_dir():
        return []
    rows = load_audioset(str(REAL_SOURCES), "test").select(range(clips))
    return [decode_audio(row["audio"], RATE, row["video_id"]) for row in rows]


@pytest.fixture(scope="module")
def real_clips():
    """Real recordings, at most 1.5 s each (enough for every front-end and mask, and some are shorter, so batches are
    padded; the tiny CNN's stride of 20 gives 1,200 frames, and attention grows with their square): the packages'
    sounds and the build's test split, where present."""
    waves = [wave[: 3 * RATE // 2] for wave in package_recordings() + built_recordings()]
    if not waves:
        pytest.skip(f"no real recordings: neither unpacked under {cache_dir() / 'real_sounds'} nor built at "
                    f"{REAL_SOURCES} (recipes/build_real_sounds.py, or set SPA_REAL_SOUNDS)")  # fmt: skip
    return waves


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> a folder holding a tiny random `*ForSequenceClassification` and its feature extractor."""
    folders = {}
    for family in HUB_FAMILIES:
        torch.manual_seed(0)
        config = tiny_config(family)
        folder = tmp_path_factory.mktemp(family)
        AutoModelForAudioClassification.from_config(config).save_pretrained(folder)
        family_extractor(family, config).save_pretrained(folder)
        folders[family] = folder
    return folders


@pytest.fixture(scope="module")
def models(checkpoints, ontology):
    """family -> an SPA model built on the checkpoint's folder (from_backbone, as users do), made lazily."""
    built = {}

    def get(family: str) -> SPAForAudioClassification:
        if family not in built:
            torch.manual_seed(0)
            built[family] = SPAForAudioClassification.from_backbone(
                "hub", pretrained_backbone=str(checkpoints[family]), label_mids=ontology.label_mids[:4],
                ontology=ontology, text_encoder=MINILM, projection_dim=8,
            ).eval()  # fmt: skip
        return built[family]

    return get


# -- the front-ends against the families' feature extractors --------------------------------------------------------


def extractor_features(extractor, waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The extractor's features of a padded batch, as (B, frames, size) or (B, samples), and its mask."""
    if isinstance(extractor, WhisperFeatureExtractor):
        out = extractor(waves, sampling_rate=RATE, return_attention_mask=True, return_tensors="pt")
        return out["input_features"].transpose(1, 2), out["attention_mask"].bool()
    if isinstance(extractor, SeamlessM4TFeatureExtractor):
        out = extractor(waves, sampling_rate=RATE, return_tensors="pt")
        return out["input_features"], out["attention_mask"].bool()
    out = extractor(waves, sampling_rate=RATE, padding=True, return_attention_mask=True, return_tensors="pt")
    return out["input_values"], out["attention_mask"].bool()


def assert_frontend_equals_extractor(frontend, extractor, waves: list[np.ndarray]) -> float:
    """Our features of the padded batch equal the extractor's on its frames (the extractor pads to the longest clip,
    ours may hold more padding), and the masks agree; returns the largest difference."""
    features, mask = frontend(*padded(waves))
    expected, expected_mask = extractor_features(extractor, waves)
    frames = expected.shape[1]
    assert not mask[:, frames:].any()
    torch.testing.assert_close(mask[:, :frames], expected_mask, rtol=0, atol=0)
    difference = (features[:, :frames] - expected).abs().max().item()
    assert difference <= TOLERANCE, difference
    return difference


FRONTEND_CASES = [
    ("waveform", Wav2Vec2FeatureExtractor(do_normalize=True)),
    ({**frontend_preset("waveform"), "do_normalize": False}, Wav2Vec2FeatureExtractor(do_normalize=False)),
    ("whisper", WhisperFeatureExtractor()),
    ("whisper_128", WhisperFeatureExtractor(feature_size=128)),
    ("w2v_bert", SeamlessM4TFeatureExtractor()),
]


@pytest.mark.parametrize(("preset", "extractor"), FRONTEND_CASES, ids=["norm", "raw", "whisper", "whisper128", "bert"])
def test_frontend_equals_the_family_feature_extractor(preset, extractor):
    settings = frontend_preset(preset) if isinstance(preset, str) else preset
    assert_frontend_equals_extractor(build_frontend(settings), extractor, clips())


@pytest.mark.parametrize(("preset", "extractor"), FRONTEND_CASES, ids=["norm", "raw", "whisper", "whisper128", "bert"])
def test_frontend_equals_the_family_feature_extractor_on_real_recordings(preset, extractor, real_clips):
    settings = frontend_preset(preset) if isinstance(preset, str) else preset
    assert_frontend_equals_extractor(build_frontend(settings), extractor, real_clips)


def test_w2v_bert_features_are_the_extractors_bit_for_bit():
    """A stationary tone leaves mel bands whose log energy hardly varies over the clip; the extractor divides each band
    by its spread over time, sqrt(var + 1e-7), down to 3e-4 here, and so turns the float32 rounding of its own fbank
    (1e-6 of values ~20) into differences of 1e-4 and more from the same formula in double precision. A front-end
    that is merely accurate is therefore not the extractor: ours rounds where its numpy does (the FFT to complex64,
    the log-mel to float32, numpy's float32 sums and correctly rounded root) and gives its features bit for bit, on
    the tone as on every clip here (and on real recordings: `test_frontend_equals_the_family_feature_extractor_on_
    real_recordings`)."""
    from transformers.audio_utils import spectrogram

    rng = np.random.default_rng(3)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(4003) / RATE) + 0.03 * rng.standard_normal(4003)).astype(
        np.float32
    )
    extractor = SeamlessM4TFeatureExtractor()
    settings = {"frame_length": 400, "hop_length": 160, "fft_length": 512, "power": 2.0, "center": False,
                "preemphasis": 0.97, "mel_filters": extractor.mel_filters, "log_mel": "log", "remove_dc_offset": True,
                "mel_floor": 1.192092955078125e-07}  # fmt: skip  # SeamlessM4TFeatureExtractor's
    fbank = spectrogram(tone.astype(np.float64) * 2**15, extractor.window, dtype=np.float64, **settings).T
    exact = (fbank - fbank.mean(0)) / np.sqrt(fbank.var(0, ddof=1) + 1e-7)
    exact = exact[: len(exact) // 2 * 2].reshape(-1, 160)  # whole pairs of frames
    frontend = build_frontend(frontend_preset("w2v_bert"))
    ours = frontend(torch.from_numpy(tone)[None])[0][0, : len(exact)].numpy()
    theirs = extractor(tone, sampling_rate=RATE, return_tensors="np")["input_features"][0, : len(exact)]
    assert np.abs(theirs - exact).max() > 10 * TOLERANCE
    np.testing.assert_array_equal(ours, theirs)
    assert assert_frontend_equals_extractor(frontend, extractor, clips()) == 0.0


def test_numpy_float32_sum_is_numpys():
    """The front-end's float32 sum in numpy's order equals `np.sum` over a contiguous axis bit for bit, at every length
    below a block, across the block size and at lengths that split unevenly; torch's own float32 sum does not."""
    plain_differs = False
    for length in [*range(1, 140), 255, 256, 257, 1000, 1003, 4099]:
        values = (np.random.default_rng(length).standard_normal((length, 3, 5)) * 10 + 3).astype(np.float32)
        expected = np.asfortranarray(values.reshape(length, 15)).sum(axis=0).reshape(3, 5)  # reduced along memory
        np.testing.assert_array_equal(numpy_float32_sum(torch.from_numpy(values)[None])[0].numpy(), expected)
        plain_differs |= not np.array_equal(torch.from_numpy(values).sum(dim=0).numpy(), expected)
    assert plain_differs


def test_whisper_crops_to_its_30_seconds_and_masks_by_frame_centre():
    frontend = build_frontend(frontend_preset("whisper"))
    long = np.random.default_rng(1).standard_normal(31 * RATE).astype(np.float32) * 0.1
    features, mask = frontend(torch.from_numpy(long)[None])
    expected = WhisperFeatureExtractor()(long, sampling_rate=RATE, return_tensors="pt")["input_features"]
    assert features.shape == (1, 3000, 80) and mask.all()
    assert (features - expected.transpose(1, 2)).abs().max() <= TOLERANCE
    _, short_mask = frontend(torch.zeros(1, 1601))  # frames 0..10 have their centre in the clip
    assert short_mask.sum() == 11


@pytest.mark.parametrize("family", HUB_FAMILIES)
def test_each_family_gets_its_extractors_frontend(family, checkpoints, models):
    model = models(family)
    extractor = AutoFeatureExtractor.from_pretrained(checkpoints[family])
    assert model.config.frontend["sampling_rate"] == RATE
    assert_frontend_equals_extractor(model.spa.frontend, extractor, clips())


def test_do_normalize_and_the_rate_come_from_the_checkpoint(tmp_path):
    config = tiny_config("wavlm")
    AutoModel.from_config(config).save_pretrained(tmp_path)
    assert load_backbone("hub", tmp_path).frontend_settings["do_normalize"] is True  # no extractor: the defaults
    Wav2Vec2FeatureExtractor(do_normalize=False, sampling_rate=8000).save_pretrained(tmp_path)
    settings = load_backbone("hub", tmp_path).frontend_settings
    assert settings["do_normalize"] is False and settings["sampling_rate"] == 8000 and settings["min_samples"] == 40


# -- the pooled embedding against transformers' models --------------------------------------------------------------


def hub_pooled(folder: Path, family: str, waves: list[np.ndarray]) -> torch.Tensor:
    """The masked mean over time of `AutoModel`'s last hidden state, computed by hand, for a padded batch prepared by
    the checkpoint's own extractor (with a mask, for the real samples' normalisation and the lengths), the model
    given the mask where the family's config asks for it."""
    model = AutoModel.from_pretrained(folder).eval()
    encoder = model.encoder if family == "whisper" else model  # Whisper's encoder-decoder: the encoder alone
    features, mask = extractor_features(AutoFeatureExtractor.from_pretrained(folder), waves)
    if family == "whisper":
        inputs = {"input_features": features.transpose(1, 2)}
    else:
        name = "input_features" if family == "wav2vec2-bert" else "input_values"
        takes_mask = getattr(model.config, "feat_extract_norm", "layer") != "group"
        inputs = {name: features, "attention_mask": mask.long() if takes_mask else None}
    with torch.no_grad():
        hidden = encoder(**inputs).last_hidden_state
    lengths = encoder._get_feat_extract_output_lengths(mask.long().sum(dim=-1))
    frames = (torch.arange(hidden.shape[1]) < lengths[:, None]).float()
    return (hidden * frames[..., None]).sum(dim=1) / frames.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("family", HUB_FAMILIES)
def test_pooled_output_equals_the_hub_model(family, checkpoints, models):
    model, waves = models(family), clips()
    with torch.no_grad():
        pooled = model.spa(*padded(waves)).pooled_output
        alone = torch.cat([model.spa(torch.from_numpy(wave)[None]).pooled_output for wave in waves])
    torch.testing.assert_close(pooled, hub_pooled(checkpoints[family], family, waves), rtol=0, atol=TOLERANCE)
    for row, wave in enumerate(waves):
        torch.testing.assert_close(
            alone[row], hub_pooled(checkpoints[family], family, [wave])[0], rtol=0, atol=TOLERANCE
        )
    # Where the family's own model is blind to padding, so is SPA: a clip in a padded batch is pooled as alone. Not
    # the group-norm CNNs (normalised over the padding too), nor Data2Vec-Audio and wav2vec2-Conformer (convolutions
    # over time after the CNN carry the padding into the last frames, mask or not), in transformers as here.
    if family in ("hubert", "unispeech", "wav2vec2-bert", "whisper"):
        torch.testing.assert_close(pooled, alone, rtol=0, atol=TOLERANCE)
    assert model.spa.backbone.masks_encoder == (TINY[family].get("feat_extract_norm") == "layer"
                                                or family in ("data2vec-audio", "wav2vec2-bert"))  # fmt: skip


@pytest.mark.parametrize("family", HUB_FAMILIES)
def test_pooled_output_equals_the_hub_model_on_real_recordings(family, checkpoints, models, real_clips):
    # The tiny Whisper takes 1 s: longer clips, which SPA windows and the extractor crops, are cut to it.
    waves = [wave[:RATE] for wave in real_clips] if family == "whisper" else real_clips
    model, expected = models(family), hub_pooled(checkpoints[family], family, waves)
    features, mask = extractor_features(AutoFeatureExtractor.from_pretrained(checkpoints[family]), waves)
    with torch.no_grad():
        pooled = model.spa(*padded(waves)).pooled_output
        on_their_features = model.spa.backbone(features, mask).pooler_output  # the encoder and pooling alone
    torch.testing.assert_close(on_their_features, expected, rtol=0, atol=TOLERANCE)
    # End to end as well. For wav2vec2-BERT this needs its features bit for bit: a near-silent frame of the build's
    # recordings has its 160 normalised features within a spread of 0.002, which the feature projection's layer norm
    # divides by, so a front-end off by 2.4e-7 (float64 rounding against the extractor's float32) gave 7e-5 here.
    torch.testing.assert_close(pooled, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_pooled_output_at_full_size(family):
    """wav2vec2-base (the audio-classification example's starting point) and Whisper's default (tiny) encoder on its
    30 s, random weights: the SPA pooled embedding against the encoder's masked mean."""
    torch.manual_seed(0)
    config = Wav2Vec2Config() if family == "wav2vec2" else WhisperConfig()
    model = SPAForAudioClassification(SPAConfig(backbone="hub", audio_config=config, num_labels=2)).eval()
    waves = clips()
    encoder = model.spa.backbone.encoder
    features, mask = extractor_features(family_extractor(family, config), waves)
    inputs = {"input_values": features} if family == "wav2vec2" else {"input_features": features.transpose(1, 2)}
    with torch.no_grad():
        pooled = model.spa(*padded(waves)).pooled_output
        hidden = encoder(**inputs).last_hidden_state
    frames = torch.arange(hidden.shape[1]) < encoder._get_feat_extract_output_lengths(mask.sum(dim=-1))[:, None]
    expected = (hidden * frames[..., None]).sum(dim=1) / frames.sum(dim=1, keepdim=True)
    assert pooled.shape == (3, config.hidden_size)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=TOLERANCE)


def test_weighted_layer_sum_and_attention_pooling(checkpoints, ontology, tmp_path):
    """audio_config overrides on a checkpoint: the SUPERB weighted sum of all layers and attention pooling, both new
    parameters, against the same computed from AutoModel's hidden states."""
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "hub", pretrained_backbone=str(checkpoints["hubert"]), audio_config={"use_weighted_layer_sum": True,
        "spa_pooling": "attention"}, label_mids=ontology.label_mids[:2], ontology=ontology, text_encoder=MINILM,
    ).eval()  # fmt: skip
    backbone = model.spa.backbone
    with torch.no_grad():
        backbone.layer_weights.copy_(torch.randn(3))
    waves = clips()
    hub = AutoModel.from_pretrained(checkpoints["hubert"]).eval()
    features, mask = extractor_features(AutoFeatureExtractor.from_pretrained(checkpoints["hubert"]), waves)
    with torch.no_grad():
        pooled = model.spa(*padded(waves)).pooled_output
        layers = torch.stack(hub(features, attention_mask=mask.long(), output_hidden_states=True).hidden_states, 1)
        hidden = (layers * backbone.layer_weights.softmax(-1)[:, None, None]).sum(dim=1)
        frames = torch.arange(hidden.shape[1]) < hub._get_feat_extract_output_lengths(mask.sum(-1))[:, None]
        scores = backbone.attention(hidden).squeeze(-1).masked_fill(~frames, -math.inf).softmax(dim=-1)
    torch.testing.assert_close(pooled, (scores[..., None] * hidden).sum(dim=1), rtol=0, atol=TOLERANCE)
    assert (scores[~frames] == 0).all() and model.config.audio_config.spa_pooling == "attention"
    reloaded = AutoModel.from_pretrained(save(model, tmp_path / "pooling")).eval()  # the options travel in the config
    with torch.no_grad():
        torch.testing.assert_close(reloaded.spa(*padded(waves)).pooled_output, pooled, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["wav2vec2", "wav2vec2-bert"])
def test_a_fine_tuned_weighted_layer_sum_keeps_its_weights(family, tmp_path):
    """A SUPERB-style classification checkpoint (use_weighted_layer_sum, learned layer weights): SPA keeps its layer
    weights, so its pooled embedding through the checkpoint's own projector and classifier gives the checkpoint's
    logits (the mean over frames commutes with the linear projector)."""
    torch.manual_seed(0)
    hub = AutoModelForAudioClassification.from_config(tiny_config(family, use_weighted_layer_sum=True)).eval()
    with torch.no_grad():
        hub.layer_weights.copy_(torch.randn_like(hub.layer_weights))
    hub.save_pretrained(tmp_path)
    family_extractor(family, hub.config).save_pretrained(tmp_path)
    backbone = load_backbone("hub", tmp_path)
    frontend, extractor = build_frontend(backbone.frontend_settings), AutoFeatureExtractor.from_pretrained(tmp_path)
    torch.testing.assert_close(backbone.layer_weights, hub.layer_weights, rtol=0, atol=0)
    for wave in clips():
        with torch.no_grad():
            expected = hub(**extractor(wave, sampling_rate=RATE, return_tensors="pt")).logits
            pooled = backbone(*frontend(torch.from_numpy(wave)[None])).pooler_output
            torch.testing.assert_close(hub.classifier(hub.projector(pooled)), expected, rtol=0, atol=TOLERANCE)


# -- config, loading and the SPA contract ---------------------------------------------------------------------------


def test_the_sub_config_is_the_familys_own():
    config = SPAConfig(backbone="hub", audio_config=tiny_config("wavlm").to_dict(), num_labels=2)
    assert type(config.audio_config).__name__ == "WavLMConfig"
    assert config.frontend["kind"] == "waveform" and window_settings(config).length == 10 * RATE
    whisper = SPAConfig(backbone="hub", audio_config=tiny_config("whisper", num_mel_bins=128), num_labels=2)
    assert whisper.frontend["n_mels"] == 128 and whisper.frontend["max_frames"] == 100
    assert window_settings(whisper).length == RATE  # Whisper's input length (1 s here, 30 s at full size)
    assert SPAConfig(backbone="hub", num_labels=2).audio_config.model_type == "wav2vec2"  # the example's default


def test_bad_configs_say_what_is_supported():
    with pytest.raises(ValueError, match="wav2vec2.*whisper"):
        SPAConfig(backbone="hub", audio_config={"model_type": "bert"})
    with pytest.raises(ValueError, match="'whisper' front-end, got a 'logmel'"):
        SPAConfig(backbone="hub", audio_config=tiny_config("whisper"), frontend=frontend_preset("ast"))
    with pytest.raises(ValueError, match="makes 128 features per frame but .* takes 80"):
        SPAConfig(backbone="hub", audio_config=tiny_config("whisper"), frontend=frontend_preset("whisper_128"))
    with pytest.raises(ValueError, match="spa_pooling"):
        SPAForAudioClassification(SPAConfig(backbone="hub", audio_config=tiny_config("sew", spa_pooling="max")))
    with pytest.raises(ValueError, match="logmel' front-end, got a 'waveform'"):
        SPAConfig(backbone="passt", frontend=frontend_preset("waveform"))


def test_checkpoints_that_cannot_be_used_are_clear_errors(tmp_path, checkpoints):
    from conftest import tiny_ast_config
    from transformers import ASTModel, BertConfig, BertModel

    ASTModel(tiny_ast_config()).save_pretrained(tmp_path / "ast")
    with pytest.raises(CheckpointError, match="backbone='ast'"):
        load_backbone("hub", tmp_path / "ast")
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(tmp_path / "b")
    with pytest.raises(CheckpointError, match="families wav2vec2, hubert, .*, whisper"):
        load_backbone("hub", tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no transformers model"):
        load_backbone("hub", tmp_path / "nothing")
    AutoModel.from_config(tiny_config("whisper")).save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor(feature_size=128, chunk_length=1).save_pretrained(tmp_path / "whisper")
    with pytest.raises(CheckpointError, match="feature_size"):
        load_backbone("hub", tmp_path / "whisper")
    # A checkpoint without part of its encoder would load with random weights there: refused.
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    AutoModel.from_config(tiny_config("wav2vec2")).save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layers.1." not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(CheckpointError, match="missing"):
        load_backbone("hub", folder)


def test_every_checkpoint_layout_loads_the_same_encoder(tmp_path):
    """A bare encoder, a CTC model and Whisper's encoder-decoder all give the encoder's weights."""
    from transformers import Wav2Vec2ForCTC, WhisperForConditionalGeneration

    torch.manual_seed(0)
    ctc = Wav2Vec2ForCTC(tiny_config("wav2vec2", vocab_size=8))
    ctc.save_pretrained(tmp_path / "ctc")
    whisper = WhisperForConditionalGeneration(tiny_config("whisper"))
    whisper.save_pretrained(tmp_path / "whisper")
    for loaded, original in ((load_backbone("hub", tmp_path / "ctc").encoder, ctc.wav2vec2),
                             (load_backbone("hub", tmp_path / "whisper").encoder, whisper.model.encoder)):  # fmt: skip
        for name, tensor in original.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_overrides_that_drop_weights_are_an_error(checkpoints, ontology):
    with pytest.raises(ValueError, match="drop .* weights"):
        SPAForAudioClassification.from_backbone(
            "hub", pretrained_backbone=str(checkpoints["wav2vec2"]), audio_config={"num_hidden_layers": 1},
            label_mids=ontology.label_mids[:2], ontology=ontology, text_encoder=MINILM,
        )  # fmt: skip


def save(model, path):
    model.save_pretrained(path)
    rate = model.config.frontend["sampling_rate"]
    SPAFeatureExtractor(sampling_rate=rate, max_length_s=window_settings(model.config).length / rate).save_pretrained(
        path
    )
    return path


@pytest.mark.parametrize("family", HUB_FAMILIES)
def test_save_and_reload_with_auto_model(family, models, tmp_path):
    model = models(family)
    path = save(model, tmp_path / family)
    config = json.loads((path / "config.json").read_text())
    assert config["backbone"] == "hub" and config["audio_config"]["model_type"] == family
    waves, mask = padded(clips())
    with torch.no_grad():
        reloaded = AutoModel.from_pretrained(path).eval()
        torch.testing.assert_close(reloaded(waves, mask).logits, model(waves, mask).logits, rtol=0, atol=0)


def test_remote_code_without_the_package(models, tmp_path):
    """Whisper's checkpoint: the encoder alone, its front-end, through the checkpoint's own code."""
    model = models("whisper")
    path = save(model, tmp_path / "whisper")
    assert (path / "backbone_hub.py").is_file() and (path / "frontends.py").is_file()
    waves = clips()
    body = """
    extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
    inputs = extractor([arrays[f"w{i}"] for i in range(3)], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    encoder = type(model.spa.backbone.encoder).__name__
    result = {"encoder": encoder, "logits": logits.tolist(), "frontend": type(model.spa.frontend).__name__}
    """
    result = run_without_package(path, body, tmp_path, **{f"w{i}": wave for i, wave in enumerate(waves)})
    assert result["encoder"] == "WhisperEncoder" and result["frontend"] == "WhisperFrontend"
    inputs = SPAFeatureExtractor.from_pretrained(path)(waves, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-6)


def test_clips_longer_than_whispers_input_are_windowed(models):
    model = models("whisper")
    wave = torch.from_numpy(np.random.default_rng(2).standard_normal(round(2.5 * RATE)).astype(np.float32))[None]
    settings = window_settings(model.config)
    starts = window_starts(wave.shape[-1], settings.length, settings.hop)
    assert settings.length == RATE and starts == [0, 16000, 24000]
    with torch.no_grad():
        windows = torch.cat([model(wave[:, s : s + settings.length]).logits for s in starts])
        torch.testing.assert_close(model(wave).logits[0], aggregate_logits(windows, [RATE] * 3, "mean"))


def test_spa_convert_takes_a_hub_checkpoint(checkpoints, tmp_path, ontology):
    from modeling_spa.cli.convert import convert

    output = convert(str(checkpoints["wav2vec2-bert"]), "hub", tmp_path / "spa", text_encoder=MINILM,
                     label_mids=ontology.label_mids[:3], projection_dim=8)  # fmt: skip
    card = (output / "README.md").read_text()
    assert "Kaldi fbank 80 mel, frames stacked by 2" in card and "see the checkpoint's card" in card
    model = AutoModel.from_pretrained(output)
    assert model.config.pretrained_backbone == checkpoints["wav2vec2-bert"].name  # the folder's name, not its path
    assert model.config.audio_config.model_type == "wav2vec2-bert"


# -- training -------------------------------------------------------------------------------------------------------


def batch():
    waves, mask = padded(clips())
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]])
    return waves, mask, labels


@pytest.mark.parametrize("family", HUB_FAMILIES)
def test_layer_wise_decay_reads_the_familys_layers(family):
    config = tiny_config(family)
    backbone = HubBackbone(config)
    names = [name for name, _ in backbone.named_parameters()]
    depths, blocks = layer_depths(names, backbone.output_modules)
    assert blocks == config.num_hidden_layers == 2
    first = {"whisper": "encoder.conv1.weight", "wav2vec2-bert": "encoder.feature_projection.projection.weight"}
    assert depths[first.get(family, "encoder.feature_extractor.conv_layers.0.conv.weight")] == 0
    final = "encoder.layer_norm.weight" if family == "whisper" else "encoder.encoder.layer_norm.weight"
    if final in depths:  # post-norm encoders normalise their input with it: depth 0
        stable = family in ("whisper", "wav2vec2-conformer") or getattr(config, "do_stable_layer_norm", False)
        assert depths[final] == (3 if stable else 0)
    # The LoRA targets are the family's attention projections.
    leaves = {
        name.rsplit(".", 1)[-1] for name, module in backbone.named_modules() if isinstance(module, torch.nn.Linear)
    }
    assert set(LORA_TARGETS[family]) <= leaves


def test_feature_encoder_freezes_and_stays_out_of_the_optimizer(models):
    model = SPAForAudioClassification(models("wav2vec2").config)
    model.load_state_dict(models("wav2vec2").state_dict())
    model.freeze_feature_encoder()
    frozen = {name: p.detach().clone() for name, p in model.spa.backbone.encoder.feature_extractor.named_parameters()}
    assert frozen and not any(p.requires_grad for p in model.spa.backbone.encoder.feature_extractor.parameters())
    groups = parameter_groups(model, model.spa.backbone, 1e-3, 1e-4, 0.01, layer_decay=0.8)
    in_groups = {id(p) for group in groups for p in group["params"]}
    assert not in_groups & {id(p) for p in model.spa.backbone.encoder.feature_extractor.parameters()}
    optimizer = torch.optim.AdamW(groups)
    model.train()
    waves, mask, labels = batch()
    model(waves, mask, labels=labels).loss.backward()
    optimizer.step()
    for name, p in model.spa.backbone.encoder.feature_extractor.named_parameters():
        torch.testing.assert_close(p, frozen[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no CNN feature encoder"):
        models("whisper").freeze_feature_encoder()


def test_train_recipe_freezes_the_feature_encoder(checkpoints, tmp_path, ontology):
    from recipe_loader import load_recipe

    from modeling_spa.training.model_setup import build_model

    recipe = load_recipe("train")
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(ontology.label_mids[:3]))
    model_args, data_args, augmentation, _ = recipe.parse_arguments([
        "--backbone", "hub", "--pretrained_backbone", str(checkpoints["wavlm"]), "--freeze_feature_encoder",
        "--text_encoder", MINILM, "--classes", str(classes), "--projection_dim", "8",
    ])  # fmt: skip
    model = build_model(model_args, data_args, augmentation)
    assert not any(p.requires_grad for p in model.spa.backbone.encoder.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.spa.backbone.encoder.encoder.parameters())
    assert model.config.pretrained_backbone == checkpoints["wavlm"].name and model.config.frontend["kind"] == "waveform"


def deterministic_model(family: str) -> SPAForAudioClassification:
    torch.manual_seed(0)
    config = SPAConfig(backbone="hub", audio_config=tiny_config(family, **DETERMINISTIC), num_labels=4,
                       projection_dim=8, text_hidden_size=8, spa_alpha=0.0, classification_loss="bce")  # fmt: skip
    return SPAForAudioClassification(config)


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    # The layers' feed-forward is counted: the layer's own `forward` carries transformers' checkpointing wrapper.
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeedForward

    calls = []
    forward = Wav2Vec2FeedForward.forward
    monkeypatch.setattr(Wav2Vec2FeedForward, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    waves, mask, labels = batch()
    grads = []
    for checkpointing in (False, True):
        model = deterministic_model("wav2vec2")
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        calls.clear()
        model(waves, mask, labels=labels).loss.backward()
        assert len(calls) == (4 if checkpointing else 2)  # two layers, recomputed in the backward pass
        grads.append(model.spa.backbone.encoder.encoder.layers[0].attention.q_proj.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


def test_bfloat16_autocast_step():
    model = deterministic_model("wav2vec2-bert").train()
    waves, mask, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(waves, mask, labels=labels).loss
    loss.backward()
    grad = model.spa.backbone.encoder.encoder.layers[0].self_attn.linear_q.weight.grad
    assert torch.isfinite(loss) and grad.abs().sum() > 0


def test_torch_compile_equals_eager():
    model = deterministic_model("wav2vec2").eval()
    waves, mask, _ = batch()
    compiled = torch.compile(model.spa.backbone)
    features, frames = model.spa.frontend(waves, mask)
    with torch.no_grad():
        expected = model.spa.backbone(features, frames).pooler_output
        torch.testing.assert_close(compiled(features, frames).pooler_output, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", HUB_FAMILIES)
def test_lora_targets_train(family):
    """The documented targets are modules the family's forward calls: every LoRA weight gets a gradient."""
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(deterministic_model(family), LoraConfig(r=4, target_modules=LORA_TARGETS[family])).train()
    waves, mask, labels = batch()
    lora(waves, mask, labels=labels).loss.backward()
    grads = {name: p.grad for name, p in lora.named_parameters() if "lora_B" in name}
    assert len(grads) == 4 and all(grad is not None and grad.abs().sum() > 0 for grad in grads.values())


def test_lora_trains_a_few_steps_and_reloads(models, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base_path = save(models("wavlm"), tmp_path / "base")
    model = AutoModel.from_pretrained(base_path)
    model.spa.backbone.encoder.config.layerdrop = 0.0  # a dropped layer's LoRA weights would get no gradient
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=LORA_TARGETS["wavlm"]))
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in lora.named_parameters() if ".lora_A" in name}
    assert wrapped == {f"base_model.model.spa.backbone.encoder.encoder.layers.{i}.feed_forward.{m}"
                       for i in (0, 1) for m in ("intermediate_dense", "output_dense")}  # fmt: skip
    assert all("lora_" in name for name, p in lora.named_parameters() if p.requires_grad)
    waves, mask, labels = batch()
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    for _ in range(3):
        loss = lora(waves, mask, labels=labels).loss
        loss.backward()
        assert math.isfinite(loss.item())
        assert all(p.grad.abs().sum() > 0 for name, p in lora.named_parameters() if "lora_B" in name)
        optimizer.step()
        optimizer.zero_grad()
    lora.eval()
    with torch.no_grad():
        tuned = lora(waves, mask).logits
        assert (tuned - models("wavlm")(waves, mask).logits).abs().max() > 1e-4
    lora.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModel.from_pretrained(base_path), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(waves, mask).logits, tuned, rtol=0, atol=1e-6)
