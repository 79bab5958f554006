"""`spa-convert` end to end on a local checkpoint (a tiny AST saved in transformers' layout)."""

import json

import pytest
import torch
from conftest import tiny_ast_config
from transformers import ASTModel, AutoFeatureExtractor, AutoModel

from modeling_spa.cli.convert import main

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def ast_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ast")
    ASTModel(tiny_ast_config()).save_pretrained(folder)
    return folder


def test_converts_into_a_folder_that_auto_model_loads(ast_checkpoint, tmp_path, mid_of):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([mid_of["Dog"], mid_of["Cat"], mid_of["Siren"]]))
    output = tmp_path / "ast-spa"
    args = [str(ast_checkpoint), "--backbone", "ast", "--output", str(output), "--text_encoder", MINILM,
            "--classes", str(classes), "--projection_dim", "16"]  # fmt: skip
    assert main(args) == 0
    model = AutoModel.from_pretrained(output).eval()
    assert model.config.label_names == ["Dog", "Cat", "Siren"]
    assert model.config.pretrained_backbone == ast_checkpoint.name  # the folder's name, never a local path
    # The backbone is the checkpoint's, weight for weight.
    original = ASTModel.from_pretrained(ast_checkpoint)
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(model.spa.backbone.ast.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    extractor = AutoFeatureExtractor.from_pretrained(output)
    assert extractor.sampling_rate == 16000
    card = (output / "README.md").read_text()
    assert "spa-convert" in card and "untrained" in card and "bsd-3-clause" in card


def test_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["nope.pt", "--backbone", "ast", "--output", str(tmp_path / "x"), "--text_encoder", MINILM]) == 1
    assert "nope.pt" in capsys.readouterr().err


def test_an_audioset_ast_keeps_its_own_head(tmp_path, mid_of):
    # AST fine-tuned on AudioSet (527 labels): its classifier is kept, frozen, as the public checkpoint's predictions.
    from transformers import ASTForAudioClassification

    from modeling_spa import SPAForAudioClassification

    torch.manual_seed(0)
    config = tiny_ast_config()
    config.num_labels = 527
    original = ASTForAudioClassification(config).eval()
    original.save_pretrained(tmp_path / "ast-audioset")
    model = SPAForAudioClassification.from_backbone(
        "ast", pretrained_backbone=str(tmp_path / "ast-audioset"), label_mids=[mid_of["Dog"], mid_of["Cat"]],
        text_encoder=MINILM, projection_dim=8,
    ).eval()  # fmt: skip
    assert not any(p.requires_grad for p in model.spa.backbone.classifier.parameters())
    waves = torch.randn(2, 16000) * 0.1
    features, _ = model.spa.frontend(waves)
    with torch.no_grad():
        expected = original(input_values=features).logits.sigmoid()
        torch.testing.assert_close(model.audioset_scores(waves), expected, rtol=0, atol=1e-6)
    path = tmp_path / "spa"
    model.save_pretrained(path)
    with torch.no_grad():
        torch.testing.assert_close(AutoModel.from_pretrained(path).eval().audioset_scores(waves), expected)
