"""The label-space options of SPAConfig: each changes what it says, survives save/load (and remote code), keeps every
trainable parameter in the graph (DDP) and a compiled step whole; and the collapse they prevent, on a tiny task."""

import pytest
import torch
from remote_code import run_without_package
from tiny_models import tiny_model
from torch._dynamo.utils import counters

from modeling_spa import SPAConfig, SPAForAudioClassification
from modeling_spa.analysis.diagnostics import label_space_diagnostics
from modeling_spa.frontend import frontend_preset
from modeling_spa.label_text import encode_label_descriptions
from modeling_spa.losses import (
    label_geometry_loss,
    label_geometry_target,
    label_uniformity_loss,
    spa_contrastive_loss,
)
from modeling_spa.training.optimization import parameter_groups

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MIXUP = {"mixup_alpha": 0.3}  # soft labels reach every term
ALL_TERMS = {"spa_objective": "contrastive", "spa_temperature": 0.2, "spa_uniformity_weight": 0.5,
             "spa_geometry_weight": 2.0, "center_label_text": True}  # fmt: skip
OPTIONS = [{}, {"freeze_text_projection": True}, {"center_label_text": True}, {"spa_objective": "contrastive"},
           {"spa_uniformity_weight": 0.5}, {"spa_geometry_weight": 1.0}, ALL_TERMS]  # fmt: skip


def batch(seed: int = 0, size: int = 4):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(size, 16000, dtype=torch.long)
    mask[seed % size, 9000:] = 0
    labels = (torch.rand(size, 5, generator=g) < 0.4).float()
    labels[0, 0] = 1  # at least one label in the batch
    return torch.randn(size, 16000, generator=g) * 0.1, mask, labels


def test_defaults_are_the_papers_eq_4_with_a_learnable_projection_plus_the_geometry_term():
    """The study's choice (recipes/results/spa_study.json): Eq. 4, p_t learned with bias, L_geo at weight 1."""
    config = SPAConfig()
    assert (config.spa_objective, config.freeze_text_projection, config.center_label_text) == ("paper", False, False)
    assert config.spa_uniformity_weight == 0 and config.spa_geometry_weight == 1.0
    model = tiny_model()
    assert model.text_projection.bias is not None and model.text_projection.weight.requires_grad
    assert "label_text_mean" not in model.state_dict()  # checkpoints without centring keep their tensors
    torch.testing.assert_close(model.label_embeds(), model.text_projection(model.label_text_embeds))


@pytest.mark.parametrize(
    "options, message",
    [({"spa_objective": "infonce"}, "spa_objective must be one of"), ({"spa_temperature": 0.0}, "must be positive"),
     ({"spa_uniformity_weight": -1.0}, "spa_uniformity_weight must be >= 0")],
)  # fmt: skip
def test_settings_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        SPAConfig(backbone="demo_cnn", audio_config={"num_mel_bins": 64}, **options)


def test_frozen_text_projection_gets_no_gradient_and_does_not_move():
    model = tiny_model(freeze_text_projection=True).train()
    before = {name: p.detach().clone() for name, p in model.text_projection.named_parameters()}
    groups = parameter_groups(model, model.spa.backbone, 1e-2, 1e-2, 0.1, None)  # weight decay too
    assert not {id(p) for p in model.text_projection.parameters()} & {id(p) for g in groups for p in g["params"]}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    values, mask, labels = batch()
    out = model(values, mask, labels=labels)
    out.loss.backward()
    optimizer.step()
    assert out.spa_loss > 0 and model.spa.audio_projection.weight.grad.abs().sum() > 0  # E_a still aligns
    for name, param in model.text_projection.named_parameters():
        assert param.grad is None and torch.equal(param, before[name]), name
    # The flag outlives from_pretrained, which re-creates parameters with requires_grad=True: freeze_unused runs in
    # __init__ and train.py calls it again after loading.
    model.text_projection.requires_grad_(True)
    model.freeze_unused()
    assert not any(p.requires_grad for p in model.text_projection.parameters())


def test_centring_subtracts_the_stored_label_mean_through_a_projection_without_bias(tmp_path):
    model = tiny_model(center_label_text=True)
    text = model.label_text_embeds
    torch.testing.assert_close(model.label_text_mean, text.mean(dim=0))
    assert model.text_projection.bias is None
    torch.testing.assert_close(model.label_embeds(), (text - text.mean(dim=0)) @ model.text_projection.weight.T)
    # Centred and without bias, the label embeddings sum to zero: they cannot all point one way.
    torch.testing.assert_close(model.label_embeds().sum(dim=0), torch.zeros(8), atol=1e-5, rtol=0)
    # The centre is a property of the model, not of the labels it has now.
    model.save_pretrained(tmp_path / "centred")
    loaded, info = SPAForAudioClassification.from_pretrained(tmp_path / "centred", output_loading_info=True)
    assert not any(info.values()), info
    assert loaded.config.center_label_text and torch.equal(loaded.label_text_mean, model.label_text_mean)
    assert torch.equal(loaded.label_embeds(), model.label_embeds())


def test_a_centred_model_without_its_centre_refuses_to_train():
    model = tiny_model(center_label_text=True)
    with torch.no_grad():
        model.label_text_mean.zero_()
    values, mask, labels = batch()
    with pytest.raises(ValueError, match=r"label_text_mean \(needed by center_label_text\)"):
        model(values, mask, labels=labels)


def test_centring_survives_remote_code(tmp_path):
    model = tiny_model(center_label_text=True, spa_objective="contrastive")
    model.save_pretrained(tmp_path / "centred")
    body = """
    with torch.no_grad():
        embeds = model.label_embeds()
    result = {"mean": model.label_text_mean.tolist(), "embeds": embeds.tolist(),
              "bias": model.text_projection.bias is not None}
    """
    result = run_without_package(tmp_path / "centred", body, tmp_path)
    assert torch.equal(torch.tensor(result["mean"]), model.label_text_mean) and result["bias"] is False
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(result["embeds"]), model.label_embeds())


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "paper")
def test_the_loss_is_its_weighted_terms_and_every_trainable_parameter_gets_a_gradient(options):
    """The loss is (L_BCE + L_OBCE)/2 + α · (L_SPA + w_u · L_unif + w_g · L_geo), each term from losses.py, under
    mixup's soft labels. Every parameter that requires a gradient gets one, so DDP needs no find_unused_parameters;
    a frozen p_t gets none."""
    model = tiny_model(augmentation=MIXUP, **options).train()
    values, mask, labels = batch()
    out = model(values, mask, labels=labels)
    config, label_embeds = model.config, model.label_embeds()
    assert out.spa_loss > 0
    expected = 0.5 * (out.bce_loss + out.obce_loss) + 0.3 * (
        out.spa_loss
        + config.spa_uniformity_weight * (out.spa_uniformity_loss if config.spa_uniformity_weight else 0.0)
        + config.spa_geometry_weight * (out.spa_geometry_loss if config.spa_geometry_weight else 0.0)
    )
    torch.testing.assert_close(out.loss, expected)
    if config.spa_uniformity_weight:
        torch.testing.assert_close(out.spa_uniformity_loss, label_uniformity_loss(label_embeds))
    else:
        assert out.spa_uniformity_loss is None
    if config.spa_geometry_weight:
        torch.testing.assert_close(out.spa_geometry_loss, label_geometry_loss(label_embeds, model.label_text_input()))
    else:
        assert out.spa_geometry_loss is None
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    frozen = config.freeze_text_projection
    assert (model.text_projection.weight.grad is None) == frozen
    assert frozen or model.text_projection.weight.grad.abs().sum() > 0


def test_contrastive_objective_is_the_loss_function_on_the_models_embeddings():
    model = tiny_model(spa_objective="contrastive", spa_temperature=0.2).eval()
    values, mask, labels = batch()
    out = model(values, mask, labels=labels)
    expected = spa_contrastive_loss(out.audio_embeds, model.label_embeds(), labels, temperature=0.2)
    torch.testing.assert_close(out.spa_loss, expected)
    paper = tiny_model().eval()(values, mask, labels=labels)
    assert not torch.allclose(out.spa_loss, paper.spa_loss)


def test_compiled_step_with_every_term_neither_breaks_nor_recompiles():
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = tiny_model(augmentation=MIXUP, **ALL_TERMS).train(), tiny_model(augmentation=MIXUP, **ALL_TERMS)
    compiled.load_state_dict(eager.state_dict())
    step = torch.compile(compiled.train(), backend="aot_eager", fullgraph=True)
    for seed in range(2):
        values, mask, labels = batch(seed)
        torch.manual_seed(seed)
        expected = eager(values, mask, labels=labels)
        torch.manual_seed(seed)
        out = step(values, mask, labels=labels)
        out.loss.backward()
        torch.testing.assert_close(out.loss, expected.loss)
        torch.testing.assert_close(out.spa_geometry_loss, expected.spa_geometry_loss)
    assert counters["stats"]["unique_graphs"] == 1 and sum(counters["recompiles"].values()) == 0
    assert not counters["graph_break"]
    assert compiled.text_projection.weight.grad.abs().sum() > 0


# -- the collapse, on a tiny task -------------------------------------------------------------------------------

COLLAPSE_LABELS = ["Speech", "Male speech, man speaking", "Female speech, woman speaking", "Dog", "Bark", "Cat",
                   "Siren", "Music", "Guitar", "Drum"]  # fmt: skip


@pytest.fixture(scope="module")
def label_text(ontology, mid_of):
    """The real label texts (MiniLM on the `concat` descriptions) and ontology distances of ten AudioSet classes."""
    mids = [mid_of[name] for name in COLLAPSE_LABELS]
    return mids, encode_label_descriptions(ontology.descriptions("concat", mids), MINILM), ontology.distances_for(mids)


def train_on_features(label_text, steps: int = 300, **options) -> dict[str, float]:
    """Heads only (p_a, c_a, p_t) on precomputed pooled features: each clip's feature is the sum of its labels'
    random prototypes plus noise. Adam at 1e-2, batch 32, the configured loss. Returns the label-space diagnostics."""
    mids, text, distances = label_text
    config = SPAConfig(backbone="demo_cnn", audio_config={"hidden_sizes": [8, 16], "num_mel_bins": 64},
                       frontend=frontend_preset("tiny"), label_mids=mids, text_hidden_size=text.shape[1],
                       projection_dim=16, **options)  # fmt: skip
    torch.manual_seed(0)
    model = SPAForAudioClassification(config)
    model.set_label_text(text)
    with torch.no_grad():
        model.label_distances.copy_(torch.from_numpy(distances))
    g = torch.Generator().manual_seed(1)
    prototypes = torch.randn(len(mids), 16, generator=g)
    labels = (torch.rand(256, len(mids), generator=g) < 0.2).float()
    features = labels @ prototypes + 0.5 * torch.randn(256, 16, generator=g)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small gain nothing from threads, and lose much on a busy machine
    try:
        for _ in range(steps):
            rows = torch.randint(0, 256, (32,), generator=g)
            embeds = model.spa.audio_projection(features[rows])
            loss = model._output(model.classifier(embeds), embeds, labels[rows]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return label_space_diagnostics(model)


def test_eq_4_with_a_learnable_projection_collapses_the_label_space(label_text):
    paper = train_on_features(label_text, spa_geometry_weight=0.0)  # α = 0.3, the paper's exact Eq. 4, p_t learned
    assert 0.3 < paper["text_cos_mean"] < 0.45  # MiniLM's label texts share a common direction
    assert paper["label_cos_mean"] > paper["text_cos_mean"] + 0.3  # measured: 0.38 -> 0.82
    assert paper["label_cos_min"] > paper["text_cos_min"] + 0.4  # even the farthest pair is close (0.17 -> 0.72)
    assert paper["label_ontology_spearman"] < paper["text_ontology_spearman"] - 0.15  # the semantics fade


@pytest.mark.parametrize(
    "options",
    [{"freeze_text_projection": True}, {"spa_geometry_weight": 1.0}, {"spa_objective": "contrastive"},
     {"spa_uniformity_weight": 0.5}, {"center_label_text": True}],
    ids=lambda o: next(iter(o)),
)  # fmt: skip
def test_the_countermeasures_keep_the_label_space_open(label_text, options):
    kept = train_on_features(label_text, **({"spa_geometry_weight": 0.0} | options))  # each option alone
    assert kept["label_cos_mean"] < kept["text_cos_mean"] + 0.1  # measured: 0.36, 0.47, 0.24, -0.11, 0.02 vs 0.38
    if "freeze_text_projection" in options or "spa_geometry_weight" in options:  # these keep T̂'s shape
        assert abs(kept["label_cos_mean"] - kept["text_cos_mean"]) < 0.15
        assert kept["label_ontology_spearman"] > kept["text_ontology_spearman"] - 0.05


# -- the geometry term's target, computed once per state of the label text ---------------------------------------


def uncached(model: SPAForAudioClassification) -> SPAForAudioClassification:
    """The model with the geometry target recomputed at every step, as before it was cached."""
    model._label_geometry_target = lambda: label_geometry_target(model.label_text_input())
    return model


def loss_and_grads(model, values, mask, labels):
    model.zero_grad(set_to_none=True)
    out = model(values, mask, labels=labels)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_step(model, reference, values, mask, labels):
    out, grads = loss_and_grads(model, values, mask, labels)
    expected, expected_grads = loss_and_grads(reference, values, mask, labels)
    assert torch.equal(out.loss, expected.loss) and torch.equal(out.spa_geometry_loss, expected.spa_geometry_loss)
    assert grads.keys() == expected_grads.keys()
    assert all(torch.equal(grads[name], expected_grads[name]) for name in grads), "gradients differ"


@pytest.mark.parametrize("options", [{}, {"center_label_text": True}, ALL_TERMS], ids=["default", "centred", "all"])
def test_the_cached_geometry_target_gives_the_uncached_loss_and_gradients(options):
    model, reference = tiny_model(**options).train(), uncached(tiny_model(**options).train())
    keys = set(model.state_dict())
    targets = []
    for seed in range(3):  # the first step computes the target, the others reuse it
        assert_same_step(model, reference, *batch(seed))
        targets.append(model._geometry_target_cache[2])
    assert targets[1] is targets[0] and targets[2] is targets[0]
    assert set(model.state_dict()) == keys  # never saved: checkpoints keep their tensors


def test_the_cached_target_follows_every_change_of_the_label_text():
    model = tiny_model(center_label_text=True).train()
    values, mask, labels = batch()

    def check():
        out = model(values, mask, labels=labels)
        expected = label_geometry_loss(model.label_embeds(), model.label_text_input())
        assert torch.equal(out.spa_geometry_loss, expected)
        return out.spa_geometry_loss

    seen = [check()]
    model.set_label_text(torch.randn(5, 6, generator=torch.Generator().manual_seed(5)) * 3)  # in place: both
    seen.append(check())
    with torch.no_grad():
        model.label_text_mean.add_(1.0)  # the centre alone
    seen.append(check())
    other = tiny_model(center_label_text=True)
    other.set_label_text(torch.randn(5, 6, generator=torch.Generator().manual_seed(6)))
    model.load_state_dict(other.state_dict())  # loaded in place
    seen.append(check())
    other.set_label_text(torch.randn(5, 6, generator=torch.Generator().manual_seed(7)))
    model.load_state_dict(other.state_dict(), assign=True)  # loaded as new tensors
    seen.append(check())
    model.double()  # new buffers in another dtype, and p_t's dtype
    assert model._label_geometry_target().dtype == torch.float32 and check().dtype == torch.float32
    assert len({round(loss.item(), 6) for loss in seen}) == len(seen)  # each change changed the loss


def test_the_cached_target_is_the_uncached_one_under_bf16_autocast():
    """Autocast computes the uncached target in bfloat16: the cache follows it on and off, bit for bit."""
    model, reference = tiny_model().train(), uncached(tiny_model().train())
    for enabled in (False, True, True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            assert_same_step(model, reference, *batch())


def test_a_target_cached_in_an_evaluation_serves_the_training_steps_after_it():
    model, reference = tiny_model(), uncached(tiny_model())
    values, mask, labels = batch()
    with torch.inference_mode():
        model.eval()(values, mask, labels=labels)
    assert_same_step(model.train(), reference.train(), values, mask, labels)
