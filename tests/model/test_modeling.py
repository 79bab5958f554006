import copy
import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_ast_config
from remote_code import run_without_package
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    pipeline,
)

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification, SPAModel
from modeling_spa.frontend import frontend_preset
from modeling_spa.label_text import encode_label_descriptions
from modeling_spa.taxonomy import AudioSetOntology

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY_CNN = {"hidden_sizes": [8, 16], "num_mel_bins": 64, "dropout": 0.0}
TINY_FRONTEND = frontend_preset("tiny")  # 16 kHz, 64 mel: small and fast; the default is the paper's (PaSST's)
TINY_AST = tiny_ast_config()


@pytest.fixture(scope="module")
def mids(ontology, mid_of):
    names = ["Speech", "Male speech, man speaking", "Female speech, woman speaking", "Dog", "Bark", "Cat", "Siren"]
    return [mid_of[name] for name in names]


@pytest.fixture(scope="module")
def cnn_model(mids, ontology):
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "demo_cnn",
        TINY_CNN,
        label_mids=mids,
        ontology=ontology,
        text_encoder=MINILM,
        projection_dim=16,
        spa_alpha=0.5,
        frontend=TINY_FRONTEND,
    )
    return model.eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    waves = torch.randn(3, 16000) * 0.1
    mask = torch.ones_like(waves, dtype=torch.long)
    mask[2, 8000:] = 0
    waves[2, 8000:] = 0
    labels = torch.zeros(3, 7)
    labels[0, [0, 1]] = 1
    labels[1, 4] = 1
    return waves, mask, labels


def test_buffers_hold_the_real_label_text_and_distances(cnn_model, mids, ontology):
    texts = ontology.descriptions("concat", mids)
    assert texts[1] == "Human sounds > Human voice > Speech > Male speech"
    torch.testing.assert_close(cnn_model.label_text_embeds, encode_label_descriptions(texts, MINILM))
    assert np.array_equal(cnn_model.label_distances.numpy(), ontology.distances_for(mids))
    assert cnn_model.config.id2label[1] == "Male speech, man speaking" and cnn_model.config.label_mids == mids
    # The text encoder is used once: it is no submodule, and its output is no parameter.
    assert not any("Bert" in type(m).__name__ for m in cnn_model.modules())
    assert all(p.data_ptr() != cnn_model.label_text_embeds.data_ptr() for p in cnn_model.parameters())


def test_loss_is_the_sum_of_its_parts(cnn_model, batch):
    waves, mask, labels = batch
    out = cnn_model(waves, mask, labels=labels)
    assert out.logits.shape == (3, 7) and out.audio_embeds.shape == (3, 16)
    assert out.spa_geometry_loss is not None  # the default objective: Eq. 4 + L_geo at weight 1
    expected = 0.5 * (out.bce_loss + out.obce_loss) + 0.5 * (out.spa_loss + out.spa_geometry_loss)
    torch.testing.assert_close(out.loss, expected)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(out.bce_loss, bce)


def test_alpha_zero_is_the_baseline_and_bce_switch(mids, ontology, cnn_model, batch):
    waves, mask, labels = batch
    for alpha, loss_name in ((0.0, "obce"), (0.0, "bce")):
        config = SPAConfig(**{**cnn_model.config.to_dict(), "spa_alpha": alpha, "classification_loss": loss_name})
        model = SPAForAudioClassification(config).eval()
        model.load_state_dict(cnn_model.state_dict())
        out = model(waves, mask, labels=labels)
        assert out.spa_loss is None
        expected = out.bce_loss if loss_name == "bce" else 0.5 * (out.bce_loss + out.obce_loss)
        torch.testing.assert_close(out.loss, expected)


def test_gradients_flow_everywhere_with_spa(cnn_model, batch):
    waves, mask, labels = batch
    model = SPAForAudioClassification(cnn_model.config)
    model.load_state_dict(cnn_model.state_dict())
    model(waves, mask, labels=labels).loss.backward()
    for name in ("text_projection", "classifier", "spa.audio_projection", "spa.backbone.blocks.0.conv1"):
        assert model.get_submodule(name).weight.grad.abs().sum() > 0, name
    assert model.label_text_embeds.grad is None


def test_masked_padding_does_not_depend_on_its_length(cnn_model):
    # Padded frames are masked out of the time pooling, so once a clip is padded beyond the convolutions' reach,
    # more padding changes nothing; without the mask it does.
    torch.manual_seed(2)
    wave = torch.randn(1, 12000) * 0.1

    def pooled(pad: int, masked: bool = True) -> torch.Tensor:
        padded = torch.cat([wave, torch.zeros(1, pad)], dim=1)
        mask = torch.cat([torch.ones(1, 12000), torch.zeros(1, pad)], dim=1).long()
        return cnn_model.spa(padded, mask if masked else None).pooled_output

    short, long = pooled(8000), pooled(40000)
    torch.testing.assert_close(long, short, rtol=1e-5, atol=1e-6)
    for total in (16000, 32000, 48000):  # a length that is no multiple of the CNN's 16-frame pooling
        clip = torch.cat([wave[:, :9800], torch.zeros(1, total - 9800)], dim=1)
        mask = (torch.arange(total) < 9800).long()[None]
        if total == 16000:
            first = cnn_model.spa(clip, mask).pooled_output
        torch.testing.assert_close(cnn_model.spa(clip, mask).pooled_output, first, rtol=1e-5, atol=1e-6)
    assert (pooled(40000, masked=False) - short).norm() > 0.05 * short.norm()


def save(model, path):
    model.save_pretrained(path)
    SPAFeatureExtractor(sampling_rate=model.config.frontend["sampling_rate"], max_length_s=1.0).save_pretrained(path)
    return path


def test_round_trip_with_auto_classes(cnn_model, batch, tmp_path):
    waves, mask, _ = batch
    path = save(cnn_model, tmp_path / "ckpt")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    expected = cnn_model(waves, mask).logits
    for auto in (AutoModel, AutoModelForAudioClassification):
        loaded = auto.from_pretrained(path).eval()
        assert type(loaded) is SPAForAudioClassification
        assert torch.equal(loaded(waves, mask).logits, expected)
        assert torch.equal(loaded.label_text_embeds, cnn_model.label_text_embeds)
        assert torch.equal(loaded.spa.frontend.mel_filters, cnn_model.spa.frontend.mel_filters)
    assert isinstance(AutoFeatureExtractor.from_pretrained(path), SPAFeatureExtractor)
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_spa.SPAForAudioClassification"
    assert config["label_mids"] == cnn_model.config.label_mids and config["spa_alpha"] == 0.5


def test_spa_model_gives_the_same_embeddings(cnn_model, batch, tmp_path):
    waves, mask, _ = batch
    path = save(cnn_model, tmp_path / "ckpt")
    base = SPAModel.from_pretrained(path).eval()
    torch.testing.assert_close(base(waves, mask).audio_embeds, cnn_model(waves, mask).audio_embeds)


def test_remote_code_works_without_the_package(cnn_model, tmp_path):
    path = save(cnn_model, tmp_path / "ckpt")
    waves = (np.random.default_rng(0).standard_normal((2, 16000)) * 0.1).astype(np.float32)
    body = """
    extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
    inputs = extractor(list(arrays["waves"]), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    result = {"class": type(model).__name__, "extractor": type(extractor).__name__, "logits": logits.tolist()}
    """
    result = run_without_package(path, body, tmp_path, waves=waves)
    assert result["class"] == "SPAForAudioClassification" and result["extractor"] == "SPAFeatureExtractor"
    inputs = SPAFeatureExtractor.from_pretrained(path)(list(waves), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = cnn_model(**inputs).logits
    assert torch.equal(torch.tensor(result["logits"]), expected)


def test_pipeline_returns_sigmoid_scores_with_label_names(cnn_model, tmp_path):
    path = save(cnn_model, tmp_path / "ckpt")
    wave = (np.random.default_rng(3).standard_normal(16000) * 0.1).astype(np.float32)
    tagger = pipeline("audio-classification", model=str(path))
    top = tagger(wave, top_k=3)
    with torch.no_grad():
        inputs = SPAFeatureExtractor.from_pretrained(path)(wave, sampling_rate=16000, return_tensors="pt")
        scores = cnn_model(**inputs).logits.sigmoid()[0]
    best = scores.argsort(descending=True)[:3]
    assert [t["label"] for t in top] == [cnn_model.config.id2label[int(i)] for i in best]
    np.testing.assert_allclose([t["score"] for t in top], scores[best].numpy(), rtol=1e-5)


def test_ast_backbone_round_trip_and_lora(mids, ontology, batch, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "ast", TINY_AST, label_mids=mids, ontology=ontology, text_encoder=MINILM, projection_dim=16
    ).eval()
    assert model.config.frontend["max_frames"] == 100 and model.config.frontend["sampling_rate"] == 16000
    waves, mask, labels = batch
    logits = model(waves, mask).logits
    path = save(model, tmp_path / "ast")
    assert torch.equal(AutoModel.from_pretrained(path).eval()(waves, mask).logits, logits)

    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    lora.train()
    lora(waves, mask, labels=labels).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_B" in n)


def test_cnn_cannot_load_pretrained_weights(mids, ontology):
    with pytest.raises(ValueError, match="'demo_cnn' backbone cannot load pretrained weights"):
        SPAForAudioClassification.from_backbone("demo_cnn", label_mids=mids, ontology=ontology, pretrained_backbone="x")


def test_classes_with_one_description_are_refused(ontology, mid_of):
    # Two classes whose ontology descriptions are equal: the `desc` style would give them one text target.
    nodes = {mid: ontology.nodes[mid] for mid in (mid_of["Dog"], mid_of["Cat"])}
    nodes[mid_of["Cat"]] = dataclasses.replace(nodes[mid_of["Cat"]], description=nodes[mid_of["Dog"]].description)
    twins = AudioSetOntology(nodes, list(nodes), ["Dog", "Cat"])
    with pytest.raises(ValueError, match=r"shared by several classes: .* for 'Dog' / 'Cat'"):
        SPAForAudioClassification.from_backbone("cnn", TINY_CNN, ontology=twins, description_style="desc")


def test_frontend_by_preset_name():
    """A preset's name where settings are expected (as recipes' YAML gives it): the preset's settings, saved as such;
    an unknown name is an error listing the known ones (it used to fail deep inside, `'str' object has no attribute
    'get'`)."""
    config = SPAConfig(backbone="demo_cnn", audio_config={"hidden_sizes": [4, 8], "num_mel_bins": 64}, frontend="tiny")
    assert config.frontend == frontend_preset("tiny")
    assert SPAConfig.from_dict(config.to_dict()).frontend == frontend_preset("tiny")
    with pytest.raises(ValueError, match="Unknown front-end preset 'tinny'; known presets: .*tiny"):
        SPAConfig(backbone="demo_cnn", frontend="tinny")


def test_config_validation():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet'"):
        SPAConfig(backbone="resnet")
    with pytest.raises(ValueError, match="description_style"):
        SPAConfig(description_style="poem")
    with pytest.raises(ValueError, match="makes 64 features per frame but the demo_cnn backbone .* takes 128"):
        SPAConfig(backbone="demo_cnn", audio_config={"num_mel_bins": 128}, frontend=TINY_FRONTEND)


def test_defaults_are_the_papers_passt_setting():
    # SPAConfig() is what its docstring says, the paper's setting: PaSST-S with PaSST's front-end (it used to claim
    # that and build the demo CNN).
    config = SPAConfig()
    frontend = config.frontend
    assert config.backbone == "passt" and config.audio_config.model_type == "spa_passt"
    assert config.audio_config.hidden_size == 768 and config.audio_config.num_hidden_layers == 12
    assert (frontend["sampling_rate"], frontend["n_mels"], frontend["win_length"], frontend["hop_length"]) == (
        32000, 128, 800, 320)  # fmt: skip
    assert frontend["max_frames"] == 1000
    assert config.description_style == "concat" and config.label_text_encoder == "google-bert/bert-base-uncased"
    assert config.spa_alpha == 0.3 and config.classification_loss == "obce"
    assert config.problem_type == "multi_label_classification"
    legacy = SPAConfig(text_encoder="x/y", text_pooling="cls")  # config.json written before the rename
    assert (legacy.label_text_encoder, legacy.label_text_pooling) == ("x/y", "cls")
    assert legacy.get_text_config() is legacy  # no str where transformers expects a text sub-config
    with pytest.raises(ValueError, match="max_frames"):
        SPAConfig(backbone="ast", audio_config=TINY_AST.to_dict(), frontend={**SPAConfig(backbone="ast").frontend})


def test_a_model_built_from_a_bare_config_refuses_to_train(cnn_model, batch):
    waves, mask, labels = batch
    for bare in (SPAForAudioClassification(cnn_model.config), AutoModel.from_config(cnn_model.config)):
        assert not bare.label_text_embeds.any() and not bare.label_distances.any()
        bare(waves, mask)  # inference needs no label data
        with pytest.raises(ValueError, match=r"label_text_embeds .* and label_distances .*from_backbone"):
            bare(waves, mask, labels=labels)
    # What it needs depends on the loss: plain BCE without SPA trains on a bare config.
    config = SPAConfig(**{**cnn_model.config.to_dict(), "spa_alpha": 0.0, "classification_loss": "bce"})
    assert torch.isfinite(SPAForAudioClassification(config)(waves, mask, labels=labels).loss)
    config = SPAConfig(**{**cnn_model.config.to_dict(), "spa_alpha": 0.0})
    with pytest.raises(ValueError, match=r"label_distances \(needed by OBCE\)"):
        SPAForAudioClassification(config)(waves, mask, labels=labels)
    # Loading the buffers (a checkpoint, or copying them in) makes it trainable: the check follows the buffers.
    bare = SPAForAudioClassification(cnn_model.config)
    bare.load_state_dict(cnn_model.state_dict())
    assert torch.isfinite(bare(waves, mask, labels=labels).loss)


def test_reheading_round_trips(cnn_model, batch, tmp_path):
    # The standard way to put a new head on a checkpoint: 7 AudioSet classes become 5 classes of one's own.
    waves, mask, _ = batch
    id2label = {i: f"class {i}" for i in range(5)}
    model = SPAForAudioClassification.from_pretrained(
        save(cnn_model, tmp_path / "seven"), num_labels=5, id2label=id2label, ignore_mismatched_sizes=True
    )
    assert model.config.num_labels == 5 and model.config.id2label == id2label
    # The mids, paths, label text and distances of the 7 classes describe none of the 5: dropped, "not built".
    assert model.config.label_mids is None and model.config.label_paths is None
    assert model.label_text_embeds.shape == (5, 384) and not model.label_text_embeds.any()
    assert model.label_distances.shape == (5, 5) and not model.label_distances.any()
    assert torch.equal(model.spa.audio_projection.weight, cnn_model.spa.audio_projection.weight)
    with torch.no_grad():
        model.classifier.weight.normal_()  # as if fine-tuned
    expected = model.eval()(waves, mask).logits
    model.save_pretrained(tmp_path / "five")
    reloaded, info = SPAForAudioClassification.from_pretrained(tmp_path / "five", output_loading_info=True)
    assert not any(info.values()), info
    assert reloaded.config.id2label == id2label and reloaded.config.label_mids is None
    assert torch.equal(reloaded.eval()(waves, mask).logits, expected)


def test_config_keeps_its_number_of_classes(mids, ontology):
    paths = ontology.descriptions("concat", mids)
    config = SPAConfig(backbone="demo_cnn", frontend=TINY_FRONTEND, label_mids=mids, label_paths=paths)
    renamed = SPAConfig.from_dict(config.to_dict())
    renamed.id2label = {i: name.upper() for i, name in config.id2label.items()}  # same classes, other names
    assert renamed.label_mids == mids and renamed.label_paths == paths
    config.num_labels = 5
    assert config.label_mids is None and config.label_paths is None
    again = SPAConfig.from_dict(config.to_dict())
    assert again.num_labels == 5 and again.label_mids is None
    # What re-heading saved before: the mids of 7 classes beside a head of 5. The head, as in the weights, wins.
    stale = {**SPAConfig(backbone="demo_cnn", frontend=TINY_FRONTEND, label_mids=mids).to_dict(), "id2label": {}}
    stale["id2label"] = {str(i): f"class {i}" for i in range(5)}
    assert SPAConfig.from_dict(stale).num_labels == 5 and SPAConfig.from_dict(stale).label_mids is None
    with pytest.raises(ValueError, match="7 label_mids but 3 label_paths"):
        SPAConfig(backbone="demo_cnn", frontend=TINY_FRONTEND, label_mids=mids, label_paths=paths[:3])


def test_batchnorm_statistics_are_initialised(cnn_model, batch, tmp_path):
    from safetensors.torch import load_file, save_file

    waves, mask, _ = batch
    # Built on the meta device, then given memory that holds garbage: init_weights must set every statistic.
    with torch.device("meta"):
        model = SPAForAudioClassification(cnn_model.config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.fill_(float("nan") if tensor.is_floating_point() else 7)
    model.init_weights()
    # A checkpoint without the running statistics: they are initialised, the rest is loaded.
    path = save(cnn_model, tmp_path / "ckpt")
    weights = load_file(path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "running_" not in k}, path / "model.safetensors", {"format": "pt"})
    loaded = SPAForAudioClassification.from_pretrained(path)
    for candidate in (model, loaded):
        norms = [m for m in candidate.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in norms)
        assert all(int(m.num_batches_tracked) == 0 for m in norms)
        assert torch.isfinite(candidate.eval()(waves, mask).logits).all()
    assert torch.equal(loaded.spa.backbone.blocks[0].conv1.weight, cnn_model.spa.backbone.blocks[0].conv1.weight)


def test_outputs_follow_transformers_conventions(cnn_model, batch):
    waves, mask, labels = batch
    out = cnn_model(waves, mask, labels=labels, output_hidden_states=True)
    # The demo CNN's hidden states are its feature maps: the normalised log-mel, then each block's output.
    frames = 1 + 16000 // TINY_FRONTEND["hop_length"]
    shapes = [tuple(h.shape) for h in out.hidden_states]
    assert shapes == [(3, 1, frames, 64), (3, 8, (frames + 1) // 2, 32), (3, 16, (frames + 3) // 4, 16)]
    assert out.attentions is None and cnn_model(waves, mask).hidden_states is None
    as_tuple = cnn_model(waves, mask, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 7  # loss, logits, audio_embeds, the 3 parts and L_geo
    assert torch.equal(as_tuple[0], out.loss) and torch.equal(as_tuple[1], out.logits)
    model = copy.deepcopy(cnn_model)
    model.config.return_dict = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (waves, mask), strict=True)  # tuples only: no ModelOutput dicts
    assert torch.equal(traced(waves, mask)[0], out.logits)
    exported = torch.export.export(cnn_model, (waves, mask))
    torch.testing.assert_close(exported.module()(waves, mask).logits, out.logits)


def test_ast_attention_implementations_and_device_map_units(mids, batch, tmp_path):
    waves, mask, _ = batch
    config = SPAConfig(backbone="ast", audio_config=TINY_AST.to_dict(), label_mids=mids, projection_dim=16)
    save(SPAForAudioClassification(config), tmp_path / "ast")
    models = {
        name: SPAForAudioClassification.from_pretrained(tmp_path / "ast", attn_implementation=name).eval()
        for name in ("sdpa", "eager")
    }
    for name, model in models.items():
        assert model.config._attn_implementation == model.config.audio_config._attn_implementation == name
    torch.testing.assert_close(models["sdpa"](waves, mask).logits, models["eager"](waves, mask).logits)
    # A device map must not cut through an attention block.
    assert {"ASTEmbeddings", "ASTLayer"} <= set(models["sdpa"]._no_split_modules)
    out = models["eager"](waves, mask, output_attentions=True, output_hidden_states=True)
    layers = TINY_AST.num_hidden_layers
    assert len(out.attentions) == layers and len(out.hidden_states) == layers + 1
    assert out.attentions[0].shape[1] == TINY_AST.num_attention_heads


def test_trainer_predict_gives_the_logits(cnn_model, batch, tmp_path):
    from transformers import Trainer, TrainingArguments

    waves, mask, labels = batch
    clips = [{"input_values": w, "attention_mask": m, "labels": y} for w, m, y in zip(waves, mask, labels, strict=True)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    predictions = Trainer(model=copy.deepcopy(cnn_model), args=args).predict(clips).predictions
    with torch.no_grad():
        expected = cnn_model(waves, mask).logits
    np.testing.assert_allclose(predictions, expected.numpy(), rtol=1e-5, atol=1e-6)
