"""HTS-AT: the converter against transformers' ClapAudioModel + HTS-AT's token-semantic head (the peer, DESIGN §8),
the CLAP audio tower path, and the SPA model around it (tiny configs, except the full-size equivalence tests)."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from peer_utils import randomize_
from remote_code import run_without_package
from torch import nn
from transformers import AutoModel, ClapAudioConfig, ClapAudioModel, ClapConfig, ClapModel

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification
from modeling_spa.backbone_htsat import HTSATConfig
from modeling_spa.conversion import RELEASES, CheckpointError, load_backbone
from modeling_spa.conversion.htsat import config_from_original, from_original_checkpoint

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# spec_size 128 over 64 mel bins: 2 time chunks of 128 frames stacked, a 32 x 32 patch grid, two stages.
TINY = {
    "spec_size": 128,
    "patch_embeds_hidden_size": 8,
    "depths": [2, 2],
    "num_attention_heads": [1, 2],
    "window_size": 4,
    "max_frames": 101,  # 1 s at 32 kHz
}


# -- the peer: ClapAudioModel + HTS-AT's head, and HTS-AT's own checkpoint layout ------------------------------------


def peer_scores(token_map: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """HTS-AT's forward_features after the Swin layers: tscam_conv, flatten to (B, 527, T), avgpool, sigmoid."""
    classes_over_time = torch.flatten(nn.functional.conv2d(token_map, conv.weight, conv.bias, padding=(0, 1)), 2)
    return torch.sigmoid(torch.flatten(nn.AdaptiveAvgPool1d(1)(classes_over_time), 1))


def original_layout(tower: ClapAudioModel, tscam_conv: nn.Conv2d) -> dict[str, torch.Tensor]:
    """The weights of `tower` and the head as HTS-AT's Lightning checkpoints hold them, written as HTS-AT's
    weight-averaged `Saved_*` files are: every tensor float, every key prefixed `sed_model.`, with the in-model STFT
    and mel, the unused `head` and the shifted windows' `attn_mask` buffers."""
    clap = {k.removeprefix("audio_encoder."): v for k, v in tower.state_dict().items()}
    renames = {
        "batch_norm.": "bn0.",
        ".layernorm_before.": ".norm1.",
        ".layernorm_after.": ".norm2.",
        ".attention.output.dense.": ".attn.proj.",
        ".attention.self.relative_position": ".attn.relative_position",
        ".intermediate.dense.": ".mlp.fc1.",
        ".output.dense.": ".mlp.fc2.",
    }
    state = {}
    for name, tensor in clap.items():
        if ".attention.self.query." in name:  # one (3C, C) qkv: rows q, then k, then v
            stem, kind = name.split(".attention.self.query.")
            parts = [clap[f"{stem}.attention.self.{p}.{kind}"] for p in ("query", "key", "value")]
            state[f"{stem}.attn.qkv.{kind}"] = torch.cat(parts)
        elif ".attention.self.key." not in name and ".attention.self.value." not in name:
            for new, old in renames.items():
                name = name.replace(new, old)
            state[name] = tensor.float()
    for name in [k for k in state if k.endswith("attn.proj.weight")]:
        block = name.removesuffix(".attn.proj.weight")
        if int(block.split(".")[3]) % 2:  # shifted windows
            state[f"{block}.attn_mask"] = torch.zeros(16, 64, 64)
    state.update(
        {
            "tscam_conv.weight": tscam_conv.weight.detach().clone(),
            "tscam_conv.bias": tscam_conv.bias.detach().clone(),
            "head.weight": torch.randn(527, 527),
            "head.bias": torch.randn(527),
            "spectrogram_extractor.stft.conv_real.weight": torch.randn(513, 1, 1024),
            "logmel_extractor.melW": torch.randn(1024 // 2 + 1, 64),
        }
    )
    return {f"sed_model.{name}": tensor for name, tensor in state.items()}


def random_peer(config: ClapAudioConfig, seed: int = 0) -> tuple[ClapAudioModel, nn.Conv2d]:
    tower = randomize_(ClapAudioModel(config), seed=seed)
    # Statistics of log-mel dB features (about -45 +- 20 dB), so that the input, not HTS-AT's biases, drives the tokens.
    generator = torch.Generator().manual_seed(seed + 1)
    norm = tower.audio_encoder.batch_norm
    norm.running_mean.copy_(-45 + 5 * torch.randn(norm.num_features, generator=generator))
    norm.running_var.copy_(400 * (0.5 + torch.randn(norm.num_features, generator=generator).abs()))
    # HTS-AT's SF: the final token map's frequency rows, (spec_size / 4 / 2^(stages - 1)) / freq_ratio.
    stages = len(config.depths)
    rows = config.spec_size // 4 // 2 ** (stages - 1) // (config.spec_size // config.num_mel_bins)
    conv = nn.Conv2d(config.patch_embeds_hidden_size * 2 ** (stages - 1), 527, kernel_size=(rows, 3), padding=(0, 1))
    return tower, randomize_(conv, seed=seed + 2)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """HTS-AT's AudioSet architecture with random weights: the peer, and the same weights in HTS-AT's .ckpt layout."""
    tower, conv = random_peer(ClapAudioConfig(hidden_dropout_prob=0.0))
    path = tmp_path_factory.mktemp("htsat") / "HTSAT_random.ckpt"
    torch.save({"state_dict": original_layout(tower, conv), "epoch": 3, "global_step": 100}, path)
    return tower, conv, path


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    tower, conv = random_peer(HTSATConfig(**TINY))
    path = tmp_path_factory.mktemp("htsat_tiny") / "tiny.ckpt"
    torch.save({"state_dict": original_layout(tower, conv)}, path)
    return tower, conv, path


# -- equivalence, full size -----------------------------------------------------------------------------------------


@torch.no_grad()
def test_converted_checkpoint_equals_clap_audio_model_and_head(full_size):
    tower, conv, path = full_size
    ours = from_original_checkpoint(path)
    assert not any(t.is_meta for t in (*ours.parameters(), *ours.buffers()))  # built on meta, given the file's
    config = ours.config
    assert (config.depths, config.num_attention_heads, config.window_size) == ([2, 2, 6, 2], [4, 8, 16, 32], 8)
    assert (config.patch_embeds_hidden_size, config.pooled_size, config.num_mel_bins) == (96, 768, 64)
    assert (config.frontend_preset, config.max_frames, config.encoder_frames) == ("cnn14", 1001, 1024)
    generator = torch.Generator().manual_seed(3)
    # 10 s (1001 frames, stretched to 1024 as HTS-AT does), exactly 1024 (no stretch), 4 s.
    results = {}
    for frames in (1001, 1024, 401):
        features = torch.randn(1, frames, 64, generator=generator) * 20 - 45
        expected = tower(input_features=features[:, None])
        out = ours(features)
        scores = ours.token_semantic_scores(out.last_hidden_state)  # what audioset_scores computes, one pass less
        results[frames] = out.pooler_output, scores
        torch.testing.assert_close(out.pooler_output, expected.pooler_output, rtol=0, atol=1e-4)
        torch.testing.assert_close(scores, peer_scores(expected.last_hidden_state, conv), rtol=0, atol=1e-4)
        assert out.pooler_output.shape == (1, 768) and scores.shape == (1, 527)
    assert torch.equal(ours.audioset_scores(features), scores)
    # The comparison is not between constants: other inputs give other embeddings and scores.
    assert (results[1001][0] - results[401][0]).abs().max() > 0.05
    assert (results[1001][1] - results[401][1]).abs().max() > 0.01


@torch.no_grad()
def test_qkv_split_follows_htsat_window_attention(full_size):
    # HTS-AT's WindowAttention written out from the original tensors (qkv reshaped to (3, heads, head_dim) rows,
    # q scaled, relative-position bias gathered by the stored index, softmax, proj) equals the converted block.
    tower, _, path = full_size
    original = {k.removeprefix("sed_model."): v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    block = "layers.2.blocks.0.attn"
    heads, dim, tokens = 16, 384, 64
    x = torch.randn(3, tokens, dim, generator=torch.Generator().manual_seed(4))
    qkv = nn.functional.linear(x, original[f"{block}.qkv.weight"], original[f"{block}.qkv.bias"])
    q, k, v = qkv.reshape(3, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    index = original[f"{block}.relative_position_index"].long().view(-1)
    bias = original[f"{block}.relative_position_bias_table"][index].view(tokens, tokens, heads).permute(2, 0, 1)
    attention = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
    expected = nn.functional.linear(
        (attention @ v).transpose(1, 2).reshape(3, tokens, dim),
        original[f"{block}.proj.weight"],
        original[f"{block}.proj.bias"],
    )
    ours = from_original_checkpoint(path).htsat.audio_encoder.layers[2].blocks[0].attention
    torch.testing.assert_close(ours(x)[0], expected, rtol=0, atol=1e-5)
    assert ours.self.relative_position_index.dtype == torch.int64  # stored as float in the averaged files


@torch.no_grad()
def test_from_backbone_with_the_original_file_gives_the_published_scores(full_size, ontology, mid_of):
    tower, conv, path = full_size
    mids = [mid_of[name] for name in ("Speech", "Dog", "Music")]
    model = SPAForAudioClassification.from_backbone(
        "htsat", pretrained_backbone=str(path), label_mids=mids, ontology=ontology, text_encoder=MINILM
    ).eval()
    assert model.config.pretrained_backbone == path.name
    assert model.config.frontend["sampling_rate"] == 32000 and model.config.frontend["max_frames"] == 1001
    assert not any(p.requires_grad for p in model.spa.backbone.tscam_conv.parameters())  # off the SPA path
    generator = torch.Generator().manual_seed(5)
    waves = torch.randn(2, 320000, generator=generator) * 0.1
    mask = torch.ones_like(waves, dtype=torch.long)
    waves[1, 96000:], mask[1, 96000:] = 0, 0  # a 3 s clip padded to 10 s
    features, _ = model.spa.frontend(waves, mask)  # the `cnn14` preset, compared with torchlibrosa in its own test
    expected = tower(input_features=features[:, None])
    scores = model.audioset_scores(waves, mask)
    torch.testing.assert_close(scores, peer_scores(expected.last_hidden_state, conv), rtol=0, atol=1e-4)
    assert (scores[0] - scores[1]).abs().max() > 0.01


# -- the converter: architecture from the file, hostile and foreign files, releases ---------------------------------


def test_architecture_is_read_from_the_file(tiny_file):
    tower, conv, path = tiny_file
    state = {k.removeprefix("sed_model."): v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    config = config_from_original(state)
    assert (config.depths, config.num_attention_heads, config.window_size) == ([2, 2], [1, 2], 4)
    assert (config.patch_embeds_hidden_size, config.pooled_size, config.num_classes) == (8, 16, 527)
    # spec_size is no weight's shape: it is HTS-AT's 256 unless the caller knows better.
    assert config.spec_size == 256


def write(path, obj) -> str:
    torch.save(obj, path)
    return str(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_hostile_and_foreign_files_are_named(tiny_file, tmp_path):
    _, _, good = tiny_file
    malicious = tmp_path / "malicious.ckpt"
    malicious.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_backbone("htsat", str(malicious))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:50000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_backbone("htsat", str(truncated))
    # A PANNs CNN14 file (its `model` dict) and a PaSST state dict are no HTS-AT checkpoints.
    cnn14 = {"model": {f"conv_block{i}.conv1.weight": torch.zeros(2, 2, 3, 3) for i in range(1, 7)}, "iteration": 1}
    with pytest.raises(CheckpointError, match="does not look like a HTS-AT checkpoint"):
        load_backbone("htsat", write(tmp_path / "cnn14.pth", cnn14))
    passt = {"cls_token": torch.zeros(1, 1, 8), "patch_embed.proj.weight": torch.zeros(8, 1, 16, 16)}
    with pytest.raises(CheckpointError, match="does not look like a HTS-AT checkpoint"):
        load_backbone("htsat", write(tmp_path / "passt.pt", passt))


def test_missing_and_unexpected_weights_are_listed(tiny_file, tmp_path):
    _, _, good = tiny_file
    state = torch.load(good, weights_only=True)["state_dict"]
    del state["sed_model.layers.1.blocks.1.mlp.fc2.weight"]
    state["sed_model.absolute_pos_embed"] = torch.zeros(1, 1024, 8)
    with pytest.raises(CheckpointError) as error:
        from_original_checkpoint(write(tmp_path / "edited.ckpt", {"state_dict": state}))
    assert "missing: htsat.audio_encoder.layers.1.blocks.1.output.dense.weight" in str(error.value)
    assert "unexpected: htsat.audio_encoder.absolute_pos_embed" in str(error.value)


def test_release_short_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SPA_CACHE", str(tmp_path))
    release = RELEASES["htsat-audioset-1"]
    assert release.backbone == "htsat" and release.filename == "HTSAT_AudioSet_Saved_1.ckpt"
    assert release.sha256 == "49804bf7767809be5d5bfe9dc25f401442e0d24f242dded6b6dabea56bb645b0"
    cached = tmp_path / "checkpoints" / release.filename
    with pytest.raises(FileNotFoundError) as error:
        load_backbone("htsat", "htsat-audioset-1")
    assert release.url in str(error.value) and str(cached) in str(error.value)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the release")
    with pytest.raises(CheckpointError, match="has sha256 .* the file is damaged or not that release"):
        load_backbone("htsat", "htsat-audioset-1")


# -- CLAP's audio tower ---------------------------------------------------------------------------------------------

TINY_CLAP_AUDIO = {k: v for k, v in TINY.items() if k != "max_frames"}


@torch.no_grad()
@pytest.mark.parametrize("saved", ["ClapModel", "ClapAudioModel"])
def test_clap_audio_tower_from_a_folder(saved, tmp_path, ontology, mid_of):
    # laion/clap-htsat-unfused is a whole ClapModel (tower under `audio_model.`); a ClapAudioModel can be saved alone.
    torch.manual_seed(0)
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    clap = ClapModel(ClapConfig(audio_config=TINY_CLAP_AUDIO, text_config={**text, "vocab_size": 99}))
    tower = randomize_(clap.audio_model)
    (clap if saved == "ClapModel" else tower).save_pretrained(tmp_path / "clap")
    model = SPAForAudioClassification.from_backbone(
        "htsat", pretrained_backbone=str(tmp_path / "clap"), label_mids=[mid_of["Dog"]], ontology=ontology,
        text_encoder=MINILM,
    ).eval()  # fmt: skip
    assert model.config.frontend["sampling_rate"] == 48000 and model.config.frontend["hop_length"] == 480
    assert model.config.frontend["max_frames"] == 256 == model.config.audio_config.max_frames  # tiny: 2 x 128
    waves = torch.randn(1, 48000) * 0.1
    features, _ = model.spa.frontend(waves)
    expected = tower(input_features=features[:, None]).pooler_output
    torch.testing.assert_close(model.spa(waves).pooled_output, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="no AudioSet head: CLAP's audio tower"):
        model.audioset_scores(waves)


def test_a_hub_model_offline_is_a_clear_error(monkeypatch):
    release = RELEASES["laion/clap-htsat-unfused"]  # for model cards: its licence, pinned file and hash
    assert release.licence == "apache-2.0" and "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a" in release.url
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"laion/clap-htsat-unfused.*Hugging Face cache.*hf download"):
        load_backbone("htsat", "laion/clap-htsat-unfused")


# -- the SPA model around a tiny HTS-AT -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(ontology, mid_of):
    torch.manual_seed(0)
    mids = [mid_of[name] for name in ("Speech", "Dog", "Bark")]
    model = SPAForAudioClassification.from_backbone(
        "htsat", TINY, label_mids=mids, ontology=ontology, text_encoder=MINILM, projection_dim=16, spa_alpha=0.5
    )
    randomize_(model.spa.backbone)
    return model.eval()


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    waves = torch.randn(2, 32000, generator=generator) * 0.1
    mask = torch.ones_like(waves, dtype=torch.long)
    waves[1, 16000:], mask[1, 16000:] = 0, 0
    return waves, mask, torch.tensor([[1.0, 0, 0], [0, 1, 1]])


def test_config_round_trip_and_validation(tiny_model):
    config = tiny_model.config
    assert config.audio_config.model_type == "spa_htsat" and config.frontend["max_frames"] == 101
    again = SPAConfig.from_dict(json.loads(config.to_json_string()))
    assert type(again.audio_config) is HTSATConfig
    assert again.audio_config.to_dict() == config.audio_config.to_dict()
    with pytest.raises(ValueError, match=r"max_frames must be in 1\.\.1024"):
        HTSATConfig(max_frames=2000)
    with pytest.raises(ValueError, match="enable_fusion"):
        HTSATConfig(enable_fusion=True)
    with pytest.raises(ValueError, match="max_frames"):
        SPAConfig(backbone="htsat", audio_config=TINY, frontend={**config.frontend, "max_frames": 1001})


def test_gradients_reach_the_encoder(tiny_model, batch):
    waves, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model.train()(waves, mask, labels=labels).loss.backward()
    encoder = model.spa.backbone.htsat.audio_encoder
    for module in (encoder.patch_embed.proj, encoder.layers[0].blocks[0].attention.self.query, encoder.batch_norm):
        assert module.weight.grad.abs().sum() > 0
    assert model.spa.backbone.tscam_conv.weight.grad is None  # frozen: no part of the loss


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, batch):
    waves, mask, labels = batch
    grads = []
    for checkpointing in (False, True):
        model = SPAForAudioClassification(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            stages = model.spa.backbone.htsat.audio_encoder.layers
            assert all(stage.gradient_checkpointing for stage in stages)
        torch.manual_seed(0)  # drop path
        model(waves, mask, labels=labels).loss.backward()
        grads.append(model.spa.backbone.htsat.audio_encoder.layers[0].blocks[1].attention.self.value.weight.grad)
    torch.testing.assert_close(grads[1], grads[0])


def save(model, path):
    model.save_pretrained(path)
    SPAFeatureExtractor(sampling_rate=model.config.frontend["sampling_rate"], max_length_s=1.0).save_pretrained(path)
    return path


def test_save_and_load_round_trip(tiny_model, batch, tmp_path):
    waves, mask, _ = batch
    path = save(tiny_model, tmp_path / "ckpt")
    loaded = AutoModel.from_pretrained(path).eval()
    assert type(loaded) is SPAForAudioClassification and type(loaded.config.audio_config) is HTSATConfig
    with torch.no_grad():
        assert torch.equal(loaded(waves, mask).logits, tiny_model(waves, mask).logits)
        assert torch.equal(loaded.audioset_scores(waves, mask), tiny_model.audioset_scores(waves, mask))


def test_remote_code_works_without_the_package(tiny_model, tmp_path):
    path = save(tiny_model, tmp_path / "ckpt")
    assert (path / "backbone_htsat.py").is_file()
    waves = (np.random.default_rng(0).standard_normal((2, 32000)) * 0.1).astype(np.float32)
    body = """
    waves = torch.from_numpy(arrays["waves"])
    with torch.no_grad():
        logits, scores = model(waves).logits, model.audioset_scores(waves)
    result = {"config": type(model.config.audio_config).__name__, "logits": logits.tolist(), "scores": scores.tolist()}
    """
    result = run_without_package(path, body, tmp_path, waves=waves)
    assert result["config"] == "HTSATConfig"
    with torch.no_grad():
        assert torch.equal(torch.tensor(result["logits"]), tiny_model(torch.from_numpy(waves)).logits)
        assert torch.equal(torch.tensor(result["scores"]), tiny_model.audioset_scores(torch.from_numpy(waves)))


def test_torch_compile_of_the_backbone(tiny_model, batch):
    waves, mask, _ = batch
    features, frame_mask = tiny_model.spa.frontend(waves, mask)
    backbone = tiny_model.spa.backbone
    # The whole encoder in one graph (no graph break); aot_eager keeps the test short (inductor compiles the same
    # graph, but takes a minute here on a cold cache).
    compiled = torch.compile(backbone, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(features, frame_mask).pooler_output, backbone(features, frame_mask).pooler_output
        )


def test_bf16_autocast_keeps_the_frontend_in_float32(tiny_model, batch):
    waves, mask, _ = batch
    with torch.no_grad():
        expected = tiny_model.spa(waves, mask).pooled_output
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features, _ = tiny_model.spa.frontend(waves, mask)
            pooled = tiny_model.spa(waves, mask).pooled_output
    assert features.dtype == torch.float32
    assert pooled.dtype == torch.bfloat16 and torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled.float(), expected, rtol=0.05, atol=0.1)


def test_lora_on_query_and_value(tiny_model, batch):
    from peft import LoraConfig, get_peft_model

    waves, mask, labels = batch
    model = SPAForAudioClassification(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"]))
    adapted = {n.split(".lora_A")[0] for n, _ in lora.named_parameters() if "lora_A" in n}
    assert len(adapted) == 2 * 4 and all(n.endswith(("query", "value")) for n in adapted)  # 4 blocks
    lora.train()(waves, mask, labels=labels).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_B" in n)


def test_outputs_hidden_states_and_attentions(tiny_model, batch):
    waves, mask, _ = batch
    with torch.no_grad():
        out = tiny_model(waves, mask, output_hidden_states=True, output_attentions=True)
    # The token maps (B, C, H, W): after the patch embedding (32 x 32 at width 8), after each of the two stages.
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 16, 16, 16)]
    assert len(out.attentions) == 2 and out.attentions[0].shape[-1] == 16  # 4 x 4 windows
    assert tiny_model(waves, mask).hidden_states is None


def test_recipe_config_parses_to_this_backbone_and_release():
    from recipe_loader import RECIPES, load_recipe

    train = load_recipe("train")
    model_args, data_args, _, args = train.parse_arguments([str(RECIPES / "configs" / "htsat_audioset.yaml")])
    assert model_args.backbone == "htsat" and RELEASES[model_args.pretrained_backbone].backbone == "htsat"
    assert (args.backbone_learning_rate, args.weight_decay, args.max_grad_norm, args.seed) == (1e-4, 0.05, 1.0, 970131)
    assert data_args.max_length_s == 10.0 and model_args.frontend is None  # the backbone's own: cnn14
