"""Zero-shot label texts: score_texts against the cosine computed by hand, the description style of free texts,
spa-tag --labels (windowed files), the AP of saved scores against scikit-learn, and the recipe's summary."""

import copy
import json

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from training_runs import load_recipe

from modeling_spa import SPAForAudioClassification
from modeling_spa.analysis.zero_shot import chance_ap, load_scores, save_scores, text_results
from modeling_spa.cli import tag as cli
from modeling_spa.frontend import frontend_preset
from modeling_spa.label_text import encode_label_descriptions, free_text_description
from modeling_spa.tagging import files as tagging
from modeling_spa.windowing import window_settings

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
NAMES = ["Speech", "Dog", "Bark", "Guitar", "Drum"]
TEXTS = ["dog barking", "church bells", "Animal > Domestic animals > Cat"]


def build(mid_of, ontology, **options) -> SPAForAudioClassification:
    torch.manual_seed(0)
    model = SPAForAudioClassification.from_backbone(
        "demo_cnn",
        {"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.0},
        label_mids=[mid_of[name] for name in NAMES],
        ontology=ontology,
        text_encoder=MINILM,
        projection_dim=8,
        frontend=frontend_preset("tiny"),
        **options,
    )
    return model.eval()


@pytest.fixture(scope="module")
def centred(mid_of, ontology):
    """Centred label text: new texts must be centred with the training labels' mean, as the labels are."""
    return build(mid_of, ontology, center_label_text=True)


def clips(seconds: float = 1.0, count: int = 2) -> torch.Tensor:
    return torch.randn(count, round(16000 * seconds), generator=torch.Generator().manual_seed(3)) * 0.1


def test_free_texts_take_the_checkpoints_description_style():
    template = "the sound of {label}"
    assert free_text_description("dog barking", "prompt", template) == "the sound of dog barking"
    for style in ("direct", "desc", "concat"):
        assert free_text_description("dog barking", style, template) == "dog barking"
    assert free_text_description("Animal > Dog", "concat", template) == "Animal > Dog"
    with pytest.raises(ValueError, match="label"):
        free_text_description("dog", "prompt", "no placeholder")


def test_score_texts_equals_the_cosine_by_hand(centred):
    x = clips()
    scores = centred.score_texts(x, TEXTS)
    assert scores.shape == (2, 3)
    text = encode_label_descriptions(TEXTS, MINILM)  # concat style: the texts as given
    with torch.no_grad():
        label_text = text - centred.label_text_mean  # the training labels' mean, not these texts'
        text_embeds = label_text @ centred.text_projection.weight.T  # centred: p_t has no bias
        audio_embeds = centred(x).audio_embeds
    expected = F.normalize(audio_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert centred.text_projection.bias is None
    # The model's own label texts give its label embeddings exactly.
    torch.testing.assert_close(centred.embed_texts(centred.config.label_paths), centred.label_embeds())


def test_score_texts_scores_in_eval_mode_and_restores_training(mid_of, ontology):
    model = build(mid_of, ontology, spa_alpha=0.5)
    model.config.augmentation = {"min_gain_db": -20.0, "max_gain_db": 20.0}  # random in training mode only
    model.train()
    x = clips()
    first, second = model.score_texts(x, TEXTS[:2]), model.score_texts(x, TEXTS[:2])
    torch.testing.assert_close(first, second)
    assert model.training


def test_prompt_style_wraps_new_texts_like_label_names(mid_of, ontology):
    model = build(mid_of, ontology, description_style="prompt")
    # "Dog" as a new text becomes "the sound of Dog": the Dog class's own description.
    torch.testing.assert_close(model.embed_texts(["Dog"])[0], model.label_embeds()[NAMES.index("Dog")])
    assert not torch.allclose(model.embed_texts(["Dog"])[0], model.embed_texts(["the sound of Dog"])[0])


def test_spa_tag_labels_prints_ranked_cosines_of_windowed_files(centred, tmp_path, capsys):
    folder = tmp_path / "model"
    centred = copy.deepcopy(centred)
    centred.config.window_length_s = 0.5  # a 1.3 s file: windows at 0 and 0.5 s, and one aligned to the end
    centred.save_pretrained(folder)
    from transformers import AutoFeatureExtractor

    from modeling_spa import SPAFeatureExtractor

    SPAFeatureExtractor(sampling_rate=16000, max_length_s=0.5).save_pretrained(folder)
    wave = clips(1.3, 1)[0]
    soundfile.write(tmp_path / "clip.wav", wave.numpy(), 16000, subtype="FLOAT")
    assert cli.main([str(tmp_path / "clip.wav"), "--model", str(folder), "--labels", *TEXTS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "not probabilities" in lines[0] and lines[1].endswith("clip.wav")
    printed = {line[10:]: float(line[:8]) for line in lines[2:]}
    assert list(printed) == sorted(printed, key=printed.get, reverse=True)  # best first
    # The same numbers as score_texts on the whole clip, which the model windows the same way.
    loaded = SPAForAudioClassification.from_pretrained(folder).eval()
    assert window_settings(loaded.config).length == 8000  # three windows of 0.5 s, not one
    expected = loaded.score_texts(wave[None], TEXTS)[0]
    for text, value in zip(TEXTS, expected.tolist(), strict=True):
        assert printed[text] == pytest.approx(value, abs=6e-4)  # printed with 3 decimals
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    exact = tagging.text_cosines(str(tmp_path / "clip.wav"), loaded, extractor, loaded.embed_texts(TEXTS))
    np.testing.assert_allclose(exact, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert cli.main([str(tmp_path / "clip.wav"), "--model", str(folder), "--labels", *TEXTS, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert [item["text"] for item in result["texts"]] == list(printed)
    assert [item["cosine"] for item in result["texts"]] == pytest.approx(sorted(expected.tolist(), reverse=True),
                                                                         abs=1e-5)  # fmt: skip


def test_zero_shot_ap_of_saved_scores_equals_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(60, 4)).astype(np.float32)
    scores[:, 3] = np.round(scores[:, 3])  # ties, handled as scikit-learn handles them
    labels = (rng.random((60, 3)) < 0.3).astype(np.uint8)
    text_classes = [0, 1, 2, 2]
    folder = save_scores(tmp_path / "run", scores, labels, {"texts": ["a", "b", "c", "c2"], "clip_ids": list("x" * 60)})
    loaded_scores, loaded_labels, meta = load_scores(folder)
    np.testing.assert_array_equal(loaded_scores, scores)
    np.testing.assert_array_equal(loaded_labels, labels)
    rows = text_results(loaded_scores, loaded_labels, text_classes)
    for i, (row, column) in enumerate(zip(rows, text_classes, strict=True)):
        assert row["ap"] == pytest.approx(average_precision_score(labels[:, column], scores[:, i]), abs=1e-12)
        assert row["chance"] == pytest.approx(chance_ap(int(labels[:, column].sum()), 60))
        assert row["positive_rate"] == pytest.approx(labels[:, column].mean())
        assert row["positives"] == labels[:, column].sum()


def test_chance_ap_is_the_mean_ap_over_every_ranking():
    # Every ordering of 6 clips, 2 of them positive (720 rankings), scored by scikit-learn.
    from itertools import permutations

    labels = np.array([1, 1, 0, 0, 0, 0])
    ranks = np.arange(6, 0, -1)
    exact = np.mean([average_precision_score(labels[list(order)], ranks) for order in permutations(range(6))])
    assert chance_ap(2, 6) == pytest.approx(exact, abs=1e-12)
    # Few positives in a test split: well above the positive rate (the figure the report gives as chance).
    assert chance_ap(7, 200) == pytest.approx(0.0587, abs=1e-4) and 7 / 200 == 0.035
    assert chance_ap(200, 200) == pytest.approx(1.0) and chance_ap(1, 1) == 1.0
    assert np.isnan(chance_ap(0, 10))


def test_recipe_summarises_saved_runs_per_class_and_seed(tmp_path):
    zero_shot = load_recipe("zero_shot")
    rng = np.random.default_rng(1)
    classes, held_out = ["/m/a", "/m/b", "/m/c"], ["/m/c"]
    texts, text_classes, forms = ["A", "a", "B", "b", "C", "c"], [0, 0, 1, 1, 2, 2], ["path", "name"] * 3
    labels = (rng.random((40, 3)) < 0.4).astype(np.uint8)
    results, expected = {}, {}
    for variant in ("contrastive", "wo_spa"):
        for seed in range(2):
            scores = rng.normal(size=(40, 6)).astype(np.float32)
            meta = {"texts": texts, "text_classes": text_classes, "text_forms": forms, "classes": classes,
                    "class_names": ["A", "B", "C"], "held_out": held_out}  # fmt: skip
            folder = save_scores(tmp_path / variant / str(seed), scores, labels, meta)
            results.setdefault(variant, []).append(zero_shot.run_results(folder))
            expected.setdefault(variant, []).append(average_precision_score(labels[:, 2], scores[:, 4]))
    table = zero_shot.summary(results, held_out)
    entry = table["/m/c|path"]
    assert entry["chance"] == pytest.approx(chance_ap(int(labels[:, 2].sum()), 40)) and entry["text"] == "C"
    for variant, values in expected.items():
        assert entry["ap"][variant]["values"] == pytest.approx(values)
        assert entry["ap"][variant]["std"] == pytest.approx(np.std(values, ddof=1))
    seen = table["seen mean|name"]["ap"]["wo_spa"]["values"]
    assert seen[0] == pytest.approx(np.mean([row["ap"] for row in results["wo_spa"][0]["texts"]
                                             if row["form"] == "name" and not row["held_out"]]))  # fmt: skip
    markdown = zero_shot.markdown(table, ["contrastive", "wo_spa"], 2)
    assert "C (`C`)" in markdown and "±" in markdown and "chance" in markdown


def test_recipe_refuses_a_run_folder_of_other_settings(tmp_path):
    """A folder trained on other seen classes (another --held_out) is never reused as if they had been held out."""
    zero_shot = load_recipe("zero_shot")
    run_dir = tmp_path / "paper" / "seed_0"
    settings = {"command": ["train.py", "--seed", "0"], "seen": {"mids": ["/m/09x0r"], "held_out": ["/m/0bt9lr"]}}
    zero_shot.check_run_settings(run_dir, settings)  # a new folder: recorded
    zero_shot.check_run_settings(run_dir, settings)  # the same settings: kept
    other = settings | {"seen": {"mids": ["/m/0bt9lr"], "held_out": ["/m/09x0r"]}}
    with pytest.raises(SystemExit, match="holds a run with other settings"):
        zero_shot.check_run_settings(run_dir, other)
    unknown = tmp_path / "wo_spa" / "seed_0"
    (unknown / "model").mkdir(parents=True)
    with pytest.raises(SystemExit, match="its settings are unknown"):
        zero_shot.check_run_settings(unknown, settings)
