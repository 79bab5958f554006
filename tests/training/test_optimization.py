"""Fine-tuning machinery, read back from a real AdamW: groups, learning rates, weight decay, layer-wise decay on AST,
the frozen-backbone warm-up, and the prior bias."""

import io
import math

import numpy as np
import pytest
import torch
from conftest import tiny_ast_config
from transformers import get_scheduler

from modeling_spa import SPAConfig, SPAForAudioClassification
from modeling_spa.training.optimization import (
    drop_gradients,
    freeze_groups,
    layer_depths,
    make_optimizer,
    parameter_groups,
    prior_bias,
    set_prior_bias,
)

HEAD_LR, BACKBONE_LR, DECAY = 1e-3, 2e-5, 0.05


@pytest.fixture(scope="module")
def ast_model():
    config = tiny_ast_config()
    config.num_hidden_layers = 2
    spa = SPAConfig(backbone="ast", audio_config=config, label_mids=["/m/a", "/m/b"], projection_dim=8,
                    text_hidden_size=6, spa_alpha=0.3)  # fmt: skip
    return SPAForAudioClassification(spa)


def settings_by_name(model, optimizer) -> dict[str, tuple[float, float]]:
    """(lr, weight decay) of every parameter, as the optimizer holds them."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return {name: (group_of[id(p)]["lr"], group_of[id(p)]["weight_decay"]) for name, p in model.named_parameters()}


def test_heads_and_backbone_rates_and_no_decay_on_norms_biases_embeddings(ast_model):
    groups = parameter_groups(ast_model, ast_model.spa.backbone, HEAD_LR, BACKBONE_LR, DECAY)
    optimizer = torch.optim.AdamW(groups, lr=0.5)
    got = settings_by_name(ast_model, optimizer)
    prefix = "spa.backbone.ast."
    assert got[prefix + "layers.0.attention.q_proj.weight"] == (BACKBONE_LR, DECAY)
    assert got[prefix + "embeddings.patch_embeddings.projection.weight"] == (BACKBONE_LR, DECAY)  # a conv kernel
    for name in ("embeddings.cls_token", "embeddings.distillation_token", "embeddings.position_embeddings",
                 "layers.1.layernorm_after.weight", "layers.1.mlp.fc1.bias", "layernorm.bias"):  # fmt: skip
        assert got[prefix + name] == (BACKBONE_LR, 0.0), name  # 3-D tokens and embeddings included
    for name in ("spa.audio_projection.weight", "classifier.weight", "text_projection.weight"):  # p_a, c_a, p_t
        assert got[name] == (HEAD_LR, DECAY), name
    assert got["classifier.bias"] == (HEAD_LR, 0.0)
    assert [g["name"] for g in optimizer.param_groups] == ["backbone.no_decay", "backbone", "heads", "heads.no_decay"]
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in ast_model.parameters())


def test_the_recipes_optimizer_is_fused_adamw_over_the_groups(ast_model):
    """make_optimizer: the fused AdamW (Trainer's default) over parameter_groups, and a step that moves the weights
    as the unfused AdamW does (to rounding)."""
    from argparse import Namespace

    args = Namespace(learning_rate=HEAD_LR, backbone_learning_rate=BACKBONE_LR, weight_decay=DECAY, layer_decay=None)
    model = SPAForAudioClassification(ast_model.config)
    optimizer = make_optimizer(model, args)
    assert optimizer.defaults["fused"] is True
    assert settings_by_name(model, optimizer) == settings_by_name(model, torch.optim.AdamW(parameter_groups(
        model, model.spa.backbone, HEAD_LR, BACKBONE_LR, DECAY)))  # fmt: skip
    twin = SPAForAudioClassification(ast_model.config)
    twin.load_state_dict(model.state_dict())
    plain = torch.optim.AdamW(parameter_groups(twin, twin.spa.backbone, HEAD_LR, BACKBONE_LR, DECAY))
    before = model.classifier.weight.detach().clone()
    for m in (model, twin):
        for p in m.parameters():
            p.grad = torch.ones_like(p) if p.requires_grad else None
    optimizer.step()
    plain.step()
    moved = model.classifier.weight.detach() - before
    assert moved.abs().min() > 0.9 * HEAD_LR  # AdamW's first step moves every weight by about lr
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_frozen_parameters_are_left_out(ast_model):
    ast_model.config.spa_alpha = 0.0
    ast_model.freeze_unused()  # p_t takes no part at α = 0
    try:
        groups = parameter_groups(ast_model, ast_model.spa.backbone, HEAD_LR, BACKBONE_LR, DECAY)
        params = {id(p) for g in groups for p in g["params"]}
        assert id(ast_model.text_projection.weight) not in params and id(ast_model.classifier.weight) in params
    finally:
        ast_model.config.spa_alpha = 0.3
        ast_model.freeze_unused()


def test_layer_wise_decay_on_ast(ast_model):
    groups = parameter_groups(ast_model, ast_model.spa.backbone, HEAD_LR, BACKBONE_LR, DECAY, layer_decay=0.5)
    got = settings_by_name(ast_model, torch.optim.AdamW(groups))
    prefix = "spa.backbone.ast."
    # L = 2 blocks: embeddings depth 0 (0.5^3), layers.0 depth 1 (0.5^2), layers.1 depth 2 (0.5), final norm 3 (1).
    assert got[prefix + "embeddings.position_embeddings"] == (BACKBONE_LR * 0.125, 0.0)
    assert got[prefix + "embeddings.patch_embeddings.projection.weight"] == (BACKBONE_LR * 0.125, DECAY)
    assert got[prefix + "layers.0.mlp.fc1.weight"] == (BACKBONE_LR * 0.25, DECAY)
    assert got[prefix + "layers.1.attention.o_proj.weight"] == (BACKBONE_LR * 0.5, DECAY)
    assert got[prefix + "layers.1.layernorm_before.weight"] == (BACKBONE_LR * 0.5, 0.0)
    assert got[prefix + "layernorm.weight"] == (BACKBONE_LR, 0.0)
    assert got["classifier.weight"] == (HEAD_LR, DECAY)  # heads: no layer decay
    assert {g["name"] for g in groups} >= {"backbone.layer_0", "backbone.layer_1.no_decay", "backbone.layer_3.no_decay"}


def test_depth_rules_for_the_other_families():
    swin = ["patch_embed.proj.weight", "layers.0.blocks.0.attn.qkv.weight", "layers.0.blocks.1.attn.qkv.weight",
            "layers.0.downsample.reduction.weight", "layers.1.blocks.0.mlp.fc1.weight", "norm.weight"]  # fmt: skip
    depths, blocks = layer_depths(swin)
    assert blocks == 3 and [depths[n] for n in swin] == [0, 1, 2, 2, 3, 4]  # downsample: its stage's last block
    passt = ["cls_token", "new_pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight",
             "blocks.2.mlp.fc2.weight", "blocks.10.attn.qkv.weight", "norm.weight"]  # fmt: skip
    depths, blocks = layer_depths(passt)
    assert blocks == 3 and [depths[n] for n in passt] == [0, 0, 0, 1, 2, 3, 4]  # numeric order: 0, 2, 10
    with pytest.raises(ValueError, match="needs a transformer backbone"):
        layer_depths(["conv_block1.conv1.weight", "fc1.weight"])


def test_frozen_backbone_warm_up_reads_zero_then_the_schedule(ast_model):
    groups = parameter_groups(ast_model, ast_model.spa.backbone, HEAD_LR, BACKBONE_LR, DECAY)
    optimizer = torch.optim.AdamW(groups)
    schedule = get_scheduler("linear", optimizer, num_warmup_steps=2, num_training_steps=10)
    scheduler = freeze_groups(schedule, steps=3)
    rates = []
    for _ in range(6):
        rates.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    # linear: 2 warm-up steps to the peak, then down to 0 at step 10; the backbone held at 0 for 3 steps.
    schedule = [0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8]
    assert [r["heads"] for r in rates] == pytest.approx([HEAD_LR * f for f in schedule])
    assert [r["backbone"] for r in rates] == pytest.approx([0, 0, 0] + [BACKBONE_LR * f for f in schedule[3:]])
    assert [r["backbone.no_decay"] for r in rates] == [r["backbone"] for r in rates]
    # Checkpointable as Accelerate loads it (weights_only): the frozen schedule is a function, not saved state.
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    restored = freeze_groups(get_scheduler("linear", optimizer, num_warmup_steps=2, num_training_steps=10), 3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.last_epoch == 6 and restored.get_last_lr() == scheduler.get_last_lr()


def test_dropped_gradients_leave_no_optimizer_state():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    before = model[0].weight.detach().clone()
    model(torch.randn(4, 3)).sum().backward()
    drop_gradients(list(model[0].parameters()))
    optimizer.step()
    assert torch.equal(model[0].weight, before)  # no step, no decay
    assert model[0].weight not in optimizer.state and model[1].weight in optimizer.state


def test_prior_bias_is_the_clamped_log_odds():
    frequency = np.array([0.5, 0.1, 0.0, 1.0, 0.25])
    expected = [0.0, math.log(0.1 / 0.9), math.log(1e-4 / (1 - 1e-4)), math.log((1 - 1e-4) / 1e-4), math.log(1 / 3)]
    torch.testing.assert_close(prior_bias(frequency), torch.tensor(expected, dtype=torch.float64))
    classifier = torch.nn.Linear(4, 5)
    set_prior_bias(classifier, frequency)
    assert torch.sigmoid(classifier.bias)[[0, 1, 4]].tolist() == pytest.approx([0.5, 0.1, 0.25], rel=1e-6)
