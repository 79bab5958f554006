"""Re-heading keeps SPA: a checkpoint of AudioSet classes re-headed to a custom taxonomy's classes gets its label texts
(the checkpoint's text encoder, pooling, style and centring) and distances, so L_SPA and OBCE work from the first step;
a flat label list keeps L_SPA and says OBCE needs a hierarchy; a missing text encoder is named."""

import json

import pytest
import torch

from modeling_spa import SPAForAudioClassification
from modeling_spa.analysis.diagnostics import label_space_diagnostics
from modeling_spa.configuration_spa import SINGLE_LABEL
from modeling_spa.conversion import rehead
from modeling_spa.hub.cards import render_model_card
from modeling_spa.label_text import encode_label_descriptions
from modeling_spa.taxonomy import Taxonomy, read_taxonomy

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY_CNN = {"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.0}
TAXONOMY = """id,name,parents,description
all,Everything,,
pets,Pets,all,Animals kept at home.
dog,Dog,pets,A dog barking.
cat,Cat,pets,A cat meowing.
drums,Drum kit,all,Drums of a kit.
kick,Kick drum,drums,The low thump of a kick drum.
snare,Snare,drums,The crack of a snare drum.
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, ontology, mid_of):
    """A small SPA checkpoint of three AudioSet classes, `prompt` style, centred label text."""
    mids = [mid_of[name] for name in ("Speech", "Dog", "Bass drum")]
    model = SPAForAudioClassification.from_backbone("demo_cnn", TINY_CNN, label_mids=mids, ontology=ontology,
                                                    text_encoder=MINILM, description_style="prompt",
                                                    prompt_template="a recording of {label}", center_label_text=True,
                                                    projection_dim=16, frontend=None)  # fmt: skip
    path = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory):
    path = tmp_path_factory.mktemp("tax") / "sounds.csv"
    path.write_text(TAXONOMY)
    return read_taxonomy(path)


def batch(classes: int, single: bool = False):
    torch.manual_seed(0)
    labels = torch.zeros(4, classes)
    labels[torch.arange(4), torch.tensor([0, 1, 2, 3]) % classes] = 1
    if not single:
        labels[0, 1] = 1
    return torch.randn(4, 16000) * 0.1, labels


def test_reheaded_checkpoint_has_label_texts_distances_and_spa_from_the_first_step(checkpoint, taxonomy):
    old = SPAForAudioClassification.from_pretrained(checkpoint)
    model = rehead(checkpoint, taxonomy)
    ids = ["dog", "cat", "kick", "snare"]
    config = model.config
    assert config.label_mids == ids and config.label_names == ["Dog", "Cat", "Kick drum", "Snare"]
    assert config.label_texts == ["a recording of Dog", "a recording of Cat", "a recording of Kick drum",
                                  "a recording of Snare"]  # the checkpoint's style and prompt  # fmt: skip
    assert config.taxonomy == {"name": "sounds", "source": "sounds.csv", "nodes": 7, "hierarchy": True}
    assert config.label_paths[2] == "Everything > Drum kit > Kick drum"
    expected = encode_label_descriptions(config.label_texts, MINILM)  # the checkpoint's encoder and pooling
    torch.testing.assert_close(model.label_text_embeds, expected)
    torch.testing.assert_close(model.label_text_mean, expected.mean(dim=0))  # centring kept, around the new labels
    assert (
        model.label_distances.tolist()
        == taxonomy.distances_for(ids).tolist()
        == [[0, 2, 4, 4], [2, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]]
    )
    # Everything but the per-class parts is the checkpoint's; the classifier is new.
    for name, tensor in old.state_dict().items():
        if not name.startswith(("classifier.", "label_")):
            torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    assert model.classifier.weight.shape == (4, 16)
    # The label-space diagnostics on the custom hierarchy, as for AudioSet.
    diagnostics = label_space_diagnostics(model)
    assert -1 <= diagnostics["text_ontology_spearman"] <= 1 and -1 <= diagnostics["label_ontology_spearman"] <= 1
    # L_SPA and OBCE from the first step.
    model.train()
    values, labels = batch(4)
    output = model(values, labels=labels)
    assert output.spa_loss.item() > 0.01 and output.obce_loss.item() > 0 and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.text_projection.weight.grad.abs().sum() > 0 and model.classifier.weight.grad.abs().sum() > 0


def test_reheaded_model_saves_reloads_and_names_its_taxonomy_in_the_card(checkpoint, taxonomy, tmp_path):
    model = rehead(checkpoint, taxonomy, classes=["Snare", "dog"], problem_type=SINGLE_LABEL)
    model.save_pretrained(tmp_path / "reheaded")
    again = SPAForAudioClassification.from_pretrained(tmp_path / "reheaded")
    torch.testing.assert_close(again.label_text_embeds, model.label_text_embeds)
    assert again.config.single_label and again.config.label_mids == ["snare", "dog"]
    card = render_model_card(again.config, "me/reheaded")
    assert "| taxonomy | sounds (7 nodes, a hierarchy, from `sounds.csv`) |" in card
    assert "| Snare | a recording of Snare |" in card
    saved = json.loads((tmp_path / "reheaded" / "config.json").read_text())
    assert saved["label_texts"] == ["a recording of Snare", "a recording of Dog"]


def test_single_label_reheading_trains_with_cross_entropy(checkpoint, taxonomy):
    model = rehead(checkpoint, taxonomy, problem_type=SINGLE_LABEL).train()
    values, labels = batch(4, single=True)
    output = model(values, labels=labels)
    assert output.ce_loss is not None and output.bce_loss is None and output.obce_loss is None
    assert output.loss.item() == pytest.approx(output.ce_loss.item() + 0.3 * (output.spa_loss.item()
                                               + output.spa_geometry_loss.item()), rel=1e-5)  # fmt: skip


def test_a_flat_label_list_keeps_spa_and_refuses_obce_saying_why(checkpoint):
    flat = Taxonomy.flat(["door knock", "kettle whistle"], descriptions=["someone knocks on a door", ""])
    model = rehead(checkpoint, flat).train()
    assert model.config.taxonomy["hierarchy"] is False and not model.label_distances.any()
    values, labels = batch(2)
    with pytest.raises(ValueError, match="flat label list.*no hierarchy.*classification_loss='bce'"):
        model(values, labels=labels)
    model.config.classification_loss = "bce"
    assert model(values, labels=labels).spa_loss.item() > 0.01


def test_a_text_encoder_that_cannot_be_loaded_is_named_with_the_way_to_provide_it(checkpoint, taxonomy, monkeypatch):
    model = SPAForAudioClassification.from_pretrained(checkpoint)
    model.config.label_text_encoder = "someone/encoder-not-here"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"this checkpoint's text encoder.*'someone/encoder-not-here'.*hf download "
                                      r"someone/encoder-not-here.*--text_encoder DIR"):  # fmt: skip
        rehead(model, taxonomy)
    with pytest.raises(ValueError, match="gives 384-dimensional embeddings.*takes 768"):
        model.config.text_hidden_size = 768  # as if the checkpoint had been built with BERT base
        rehead(model, taxonomy, text_encoder=MINILM)
