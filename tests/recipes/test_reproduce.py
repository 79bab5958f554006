"""recipes/reproduce.py end to end on a tiny real build (tables, Fig. 3, reuse, resume, styles), the public
checkpoint's row, and the five AudioSet recipe configs against their sources' published settings."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from peer_utils import randomize_
from recipe_loader import load_recipe
from safetensors.torch import load_file

from modeling_spa import SPAFeatureExtractor, SPAForAudioClassification, compute_omap
from modeling_spa.backbone_cnn14 import Cnn14Backbone, Cnn14Config
from modeling_spa.backbones import backbone_spec
from modeling_spa.data import load_audioset
from modeling_spa.frontend import frontend_preset

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CLASSES = ["Siren", "Police car (siren)", "Civil defense siren", "White noise", "Pink noise", "Dial tone", "Tick"]
LAUNCH = "--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
# Two epochs of three steps: a checkpoint at each epoch's end, so a run can be cut back to its first epoch.
TINY_CONFIG = """\
backbone: demo_cnn
frontend: tiny
audio_config: '{{"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.2}}'
projection_dim: 16
text_encoder: {minilm}
dataset: {data}
classes: {data}/classes.json
max_length_s: 1.0
num_workers: 0
num_epochs: 2
batch_size: 8
eval_batch_size: 16
learning_rate: 3.0e-3
checkpointing_steps: 100
ema_decay: 0.9
cpu: true
seed: 0
"""


reproduce = load_recipe("reproduce")
train_recipe = load_recipe("train")


def run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run in a process group of its own; on timeout kill the group (launcher and trainer) and fail."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(command[:4])} ... did not finish in {timeout} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, ontology):
    build = load_recipe("build_demo_dataset").build_demo_dataset
    root = tmp_path_factory.mktemp("data") / "tiny"
    build(root, 24, 8, 8, duration_s=1.0, class_names=CLASSES, ontology=ontology, speech=False)
    return root


@pytest.fixture(scope="module")
def config(data_dir):
    path = data_dir.parent / "tiny.yaml"
    path.write_text(TINY_CONFIG.format(minilm=MINILM, data=data_dir))
    return path


def reproduce_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "recipes" / "reproduce.py"), "--backbone", "demo_cnn", "--config", str(config),
            "--output_dir", str(out), "--launch_args", LAUNCH, *extra]  # fmt: skip


def results_of(run_dir: Path, folder: str = "model_ema") -> dict:
    return json.loads((run_dir / folder / "eval_results.json").read_text())["test"]


# The steps share one output folder, in order: the first call trains, the second reuses, the third resumes a run cut
# back to its first epoch, the fourth adds the description styles.


@pytest.fixture(scope="module")
def first(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    done = run(reproduce_command(config, out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, done


@pytest.fixture(scope="module")
def second(first, config):
    out, _ = first
    weights = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_0/model*/model.safetensors")}
    logs = {p: p.read_text() for p in out.glob("*/seed_0/train.log")}
    done = run(reproduce_command(config, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done, weights, logs


@pytest.fixture(scope="module")
def resumed(second, config):
    out = second[0]
    spa = out / "spa_concat" / "seed_0"
    uninterrupted = {"results": results_of(spa), "weights": load_file(spa / "model" / "model.safetensors")}
    # As if killed during epoch 1: its final models and its last checkpoint (step 6) are gone, step 3 remains.
    for name in ("model", "model_ema", "history.json", "checkpoints/step_6"):
        shutil.rmtree(spa / name) if (spa / name).is_dir() else (spa / name).unlink()
    done = run(reproduce_command(config, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done, uninterrupted


@pytest.fixture(scope="module")
def styled(resumed, config):
    out = resumed[0]
    done = run(reproduce_command(config, out, "--styles"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.mark.slow
def test_table1_markdown_and_json_hold_both_models_and_their_difference(first):
    out, done = first
    table = json.loads((out / "table1.json").read_text())
    assert table["split"] == "test" and table["weights"] == "model_ema" and table["seeds"] == [0]
    assert [row["row"] for row in table["rows"]] == ["wo_spa", "spa", "difference"]
    base, spa = results_of(out / "wo_spa" / "seed_0"), results_of(out / "spa_concat" / "seed_0")
    rows = {row["row"]: row for row in table["rows"]}
    for key in ("map", "omap"):
        assert rows["wo_spa"][key]["values"] == [base[key]] and rows["spa"][key]["values"] == [spa[key]]
        assert rows["difference"][key]["mean"] == pytest.approx(spa[key] - base[key], abs=1e-12)
        assert rows["wo_spa"][key]["std"] is None  # one seed: no spread
        assert 0 < base[key] < 1 and base[key] != spa[key]
    # The baseline trained at α = 0 with (BCE + OBCE)/2, the SPA run at the config's α with concat descriptions.
    base_config = json.loads((out / "wo_spa" / "seed_0" / "model" / "config.json").read_text())
    spa_config = json.loads((out / "spa_concat" / "seed_0" / "model" / "config.json").read_text())
    assert (base_config["spa_alpha"], base_config["classification_loss"]) == (0.0, "obce")
    assert (spa_config["spa_alpha"], spa_config["description_style"]) == (0.3, "concat")
    markdown = (out / "table1.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0] == "| model | mAP | OmAP |" and len(lines) == 4
    assert lines[1].startswith("| w/o SPA: α = 0, (BCE + OBCE)/2 |") and f"| {base['map']:.4f} |" in lines[1]
    assert lines[2].startswith("| w/ SPA: α = 0.3, concat descriptions |") and f"| {spa['omap']:.4f} |" in lines[2]
    assert re.fullmatch(r"\| difference \(w/ SPA − w/o SPA\) \| [+-]\d\.\d{4} \| [+-]\d\.\d{4} \|", lines[3])
    assert "**test split**" in markdown and "weights `model_ema`" in markdown
    assert "| w/o SPA" in done.stdout  # printed too


@pytest.mark.slow
def test_figure3_is_a_png_of_the_per_level_differences(first):
    out, _ = first
    png = out / "omap_lambda_difference.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (384, 840)  # 7 x 3.2 inches at 120 dpi
    curve = json.loads((out / "table1.json").read_text())["omap_per_lambda_difference"]
    base = results_of(out / "wo_spa" / "seed_0")["omap_per_lambda"]
    spa = results_of(out / "spa_concat" / "seed_0")["omap_per_lambda"]
    np.testing.assert_allclose(curve["mean"], np.subtract(spa, base), atol=1e-12)
    assert curve["std"] is None and len(curve["per_seed"]) == 1 and len(curve["mean"]) >= 2


@pytest.mark.slow
def test_a_second_call_retrains_nothing(second):
    out, done, weights, logs = second
    assert done.stdout.count("finished before, kept") == 2 and "training in" not in done.stdout
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # no model file rewritten
    assert {p: p.read_text() for p in logs} == logs  # no train.py started
    assert len(weights) == 4  # model and model_ema of both runs


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_checkpoint(resumed):
    out, done, uninterrupted = resumed
    spa = out / "spa_concat" / "seed_0"
    assert "spa_concat, seed 0: resuming" in done.stdout and done.stdout.count("finished before, kept") == 1
    log = (spa / "train.log").read_text()
    assert log.count("\n$ ") == 2 and f"Resumed from {spa / 'checkpoints' / 'step_3'}: epoch 1, step 3" in log
    # The resumed run ends where the uninterrupted one did (1-s clips: no random crops, whose offsets are not kept).
    weights = load_file(spa / "model" / "model.safetensors")
    for key, value in uninterrupted["weights"].items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key in ("map", "omap"):
        assert results_of(spa)[key] == pytest.approx(uninterrupted["results"][key], abs=1e-6)


@pytest.mark.slow
def test_styles_add_table2_training_only_the_new_styles(styled):
    out, done = styled
    assert done.stdout.count("finished before, kept") == 2  # w/o SPA and concat: already there
    assert all(f"spa_{style}, seed 0: training" in done.stdout for style in ("direct", "prompt", "desc"))
    table = json.loads((out / "table2.json").read_text())
    assert [row["row"] for row in table["rows"]] == ["wo_spa", "spa_direct", "spa_prompt", "spa_desc", "spa_concat"]
    base = results_of(out / "wo_spa" / "seed_0")
    for row in table["rows"][1:]:
        style = row["row"].removeprefix("spa_")
        run_dir = out / row["row"] / "seed_0"
        assert json.loads((run_dir / "model" / "config.json").read_text())["description_style"] == style
        result = results_of(run_dir)
        for key in ("map", "omap"):
            assert row[key]["values"] == [result[key]]
            assert row["difference"][key]["mean"] == pytest.approx(result[key] - base[key], abs=1e-12)
    markdown = (out / "table2.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0] == "| description style | mAP | OmAP | ΔmAP | ΔOmAP |" and len(lines) == 6
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| w/o SPA", "| w/ SPA, direct", "| w/ SPA, prompt",
                                                           "| w/ SPA, desc", "| w/ SPA, concat"]  # fmt: skip
    assert lines[1].endswith(f"| {base['omap']:.4f} |  |  |")  # the reference row has no differences
    assert all(re.search(r"\| [+-]\d\.\d{4} \| [+-]\d\.\d{4} \|$", line) for line in lines[2:])
    concat = next(row for row in table["rows"] if row["row"] == "spa_concat")
    table1 = {row["row"]: row for row in json.loads((out / "table1.json").read_text())["rows"]}
    assert concat["omap"] == table1["spa"]["omap"]  # Table 1's SPA run is Table 2's concat run


@pytest.mark.slow
def test_changed_settings_are_refused_not_mixed(styled, config):
    out, _ = styled
    done = run(reproduce_command(config, out, "--spa_alpha", "0.5"))
    assert done.returncode != 0
    assert "was trained with other settings (arguments differ)" in done.stderr


# -- arguments and tables, without training ---------------------------------------------------------------------


def test_arguments_pass_through_to_train_and_runs_come_seed_by_seed(tmp_path):
    args, extra = reproduce.parse_args(["--backbone", "passt", "--seed", "5", "--num_epochs", "1", "--seeds", "2"])
    assert args.seeds == 2 and extra == ["--seed", "5", "--num_epochs", "1", "--backbone", "passt"]
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--backbone", "passt", "--baseline", "bce"])
    runs = reproduce.plan_runs([5, 6], "concat", styles=True)
    assert [(r.name, r.seed) for r in runs[:5]] == [("wo_spa", 5), ("spa_concat", 5), ("spa_direct", 5),
                                                    ("spa_prompt", 5), ("spa_desc", 5)]  # fmt: skip
    assert [r.name for r in reproduce.plan_runs([0], "desc", styles=False)] == ["wo_spa", "spa_desc"]
    command = reproduce.train_command("--num_processes 4", CONFIGS / "passt_audioset.yaml", extra, runs[0], tmp_path)
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "4"]
    assert command[-8:] == ["--baseline", "wo_spa", "--seed", "5", "--output_dir", str(tmp_path),
                            "--resume_from_checkpoint", "latest"]  # fmt: skip
    model_args, data_args, _, train_args = train_recipe.parse_arguments([*command[6:]])
    assert (model_args.spa_alpha, model_args.classification_loss, train_args.seed) == (0.0, "obce", 5)
    assert train_args.num_epochs == 1 and reproduce.report_split(data_args) == "test"


def test_table1_with_several_seeds_and_the_public_row():
    base = [{"map": 0.40, "omap": 0.70}, {"map": 0.42, "omap": 0.72}]
    spa = [{"map": 0.39, "omap": 0.73}, {"map": 0.41, "omap": 0.74}]
    public = {"map": 0.4312, "omap": 0.7654}
    rows = reproduce.table1({"wo_spa": base, "spa_concat": spa}, "spa_concat", 0.3, public, "cnn14-ap431")
    assert [row["row"] for row in rows] == ["public", "wo_spa", "spa", "difference"]
    assert rows[3]["omap"]["values"] == pytest.approx([0.03, 0.02]) and rows[3]["omap"]["std"] == pytest.approx(
        np.std([0.03, 0.02], ddof=1)
    )
    lines = reproduce.markdown_table1(rows).splitlines()
    assert lines[2] == "| public checkpoint as is (cnn14-ap431) | 0.4312 | 0.7654 |"
    assert lines[3] == "| w/o SPA: α = 0, (BCE + OBCE)/2 | 0.4100 ± 0.0141 | 0.7100 ± 0.0141 |"
    assert lines[5] == "| difference (w/ SPA − w/o SPA) | -0.0100 ± 0.0000 | +0.0250 ± 0.0071 |"


# -- the public checkpoint as is --------------------------------------------------------------------------------


def test_public_checkpoint_row_is_its_own_head_on_the_527_labels(data_dir, tmp_path, ontology):
    torch.manual_seed(0)
    tiny = {"hidden_sizes": [4, 8, 8, 16], "embedding_size": 16, "block_dropout": 0.0, "embedding_dropout": 0.0}
    checkpoint = tmp_path / "Cnn14_tiny.pth"
    backbone = randomize_(Cnn14Backbone(Cnn14Config(**tiny)), seed=3)  # default BatchNorm statistics hide errors
    torch.save({"model": backbone.state_dict()}, checkpoint)  # PANNs' file layout
    arguments = ["--backbone", "cnn14", "--pretrained_backbone", str(checkpoint), "--dataset", str(data_dir),
                 "--max_length_s", "1.0", "--num_workers", "0"]  # fmt: skip
    model_args, data_args, _, _ = train_recipe.parse_arguments(arguments)
    result = reproduce.public_checkpoint_results(model_args, data_args, "test", batch_size=4)
    # The same scores through the SPA model built on that checkpoint, its feature extractor and audioset_scores.
    # (Its own classes do not matter to the original head's 527 outputs: 7 label texts to embed, not 527.)
    model = SPAForAudioClassification.from_backbone(
        "cnn14", pretrained_backbone=str(checkpoint), label_mids=ontology.label_mids[:7], ontology=ontology,
        text_encoder=MINILM, projection_dim=8,
    ).eval()  # fmt: skip
    extractor = SPAFeatureExtractor(sampling_rate=32000, max_length_s=1.0)
    test = load_audioset(str(data_dir), "test")
    waves = [soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32") for row in test]
    inputs = extractor([w for w, _ in waves], sampling_rate=waves[0][1], return_tensors="pt")
    with torch.no_grad():
        scores = model.audioset_scores(inputs["input_values"], inputs["attention_mask"]).numpy()
    labels = np.zeros((len(test), 527))
    for i, row in enumerate(test):
        labels[i, [ontology.label_mids.index(mid) for mid in row["labels"]]] = 1
    assert np.ptp(scores, axis=0).max() > 1e-3  # scores that rank the clips: the comparison means something
    expected = compute_omap(labels, scores)
    assert result["clips"] == 8 and result["n_classes_evaluated"] == expected["n_classes_evaluated"] <= 7
    assert result["map"] == pytest.approx(expected["map"], abs=1e-6)
    assert result["omap"] == pytest.approx(expected["omap"], abs=1e-6)
    assert len(result["omap_per_lambda"]) == 22  # the 527 labels' 22 levels


def test_public_row_refuses_a_backbone_without_its_head(data_dir):
    model_args, data_args, _, _ = train_recipe.parse_arguments(["--backbone", "demo_cnn", "--dataset", str(data_dir)])
    with pytest.raises(SystemExit, match="needs a --pretrained_backbone"):
        reproduce.public_checkpoint_results(model_args, data_args, "test", batch_size=4)
    model_args.pretrained_backbone, data_args.classes = "x", str(data_dir / "classes.json")
    with pytest.raises(SystemExit, match="527 AudioSet labels"):
        reproduce.public_checkpoint_results(model_args, data_args, "test", batch_size=4)


# -- the AudioSet recipe configs ----------------------------------------------------------------------------------

# Per backbone: its source's published settings (see each YAML's comments for the file and line they come from).
SOURCES = {
    # kkoutini/PaSST ex_audioset.py, audioset/dataset.py, models/preprocess.py
    "passt": {"pretrained_backbone": "passt-s-swa-ap476", "sampling_rate": 32000, "batch_size": 12,
              "eval_batch_size": 20, "backbone_learning_rate": 2e-5, "weight_decay": 1e-4, "num_epochs": 130,
              "balanced_sampling": True, "epoch_length": 100000, "sampling_offset": 100.0, "mixup_alpha": 0.3,
              "mixup_prob": 1.0, "mixup_domain": "logmel", "freq_masks": 1, "freq_mask_width": 48, "time_masks": 1,
              "time_mask_width": 192, "min_gain_db": -7.0, "max_gain_db": 7.0, "shift_samples": 50,
              "mixed_precision": "fp16", "clips": False, "ema": True},
    # YuanGongND/ast egs/audioset/run.sh (full), src/run.py, src/traintest.py, src/dataloader.py
    "ast": {"pretrained_backbone": "MIT/ast-finetuned-audioset-10-10-0.4593", "sampling_rate": 16000,
            "batch_size": 12, "eval_batch_size": 24, "backbone_learning_rate": 1e-5, "weight_decay": 5e-7,
            "num_epochs": 5, "balanced_sampling": True, "epoch_length": None, "sampling_offset": 0.01,
            "mixup_alpha": 10.0, "mixup_prob": 0.5, "mixup_domain": "waveform", "freq_masks": 1,
            "freq_mask_width": 48, "time_masks": 1, "time_mask_width": 192, "mixed_precision": "fp16",
            "clips": False, "ema": True},
    # qiuqiangkong/audioset_tagging_cnn scripts/4_train.sh, pytorch/main.py, pytorch/models.py
    "cnn14": {"pretrained_backbone": "cnn14-ap431", "sampling_rate": 32000, "batch_size": 32,
              "backbone_learning_rate": 1e-4, "weight_decay": 0.0, "balanced_sampling": True, "epoch_length": None,
              "mixup_alpha": 1.0, "mixup_prob": 1.0, "mixup_domain": "logmel", "freq_masks": 2, "freq_mask_width": 8,
              "time_masks": 2, "time_mask_width": 64, "mixed_precision": "no", "clips": False, "ema": False},
    # RetroCirce/HTS-Audio-Transformer config.py, sed_model.py, model/htsat.py, main.py
    "htsat": {"pretrained_backbone": "htsat-audioset-1", "sampling_rate": 32000, "batch_size": 32, "seed": 970131,
              "backbone_learning_rate": 1e-4, "weight_decay": 0.05, "num_epochs": 100, "balanced_sampling": True,
              "mixup_alpha": 0.5, "mixup_prob": 1.0, "mixup_domain": "logmel", "freq_masks": 2, "freq_mask_width": 8,
              "time_masks": 2, "time_mask_width": 64, "max_grad_norm": 1.0, "mixed_precision": "no", "ema": False},
    # YuanGongND/psla egs/audioset/run.sh (full), src/run.py, src/traintest.py, src/dataloaders/audioset_dataset.py
    "psla": {"pretrained_backbone": "checkpoints/as_mdl_0_wa.pth", "sampling_rate": 16000, "batch_size": 100,
             "backbone_learning_rate": 1e-4, "weight_decay": 5e-7, "num_epochs": 30, "balanced_sampling": True,
             "epoch_length": None, "sampling_offset": 0.01, "mixup_alpha": 10.0, "mixup_prob": 0.5,
             "mixup_domain": "waveform", "freq_masks": 1, "freq_mask_width": 48, "time_masks": 1,
             "time_mask_width": 192, "mixed_precision": "no", "clips": False, "ema": True},
}  # fmt: skip


def frontend_of(backbone: str, frontend: str | None) -> dict:
    spec = backbone_spec(backbone)
    return frontend_preset(frontend or spec.frontend_name(spec.make_config(None)))


@pytest.mark.parametrize("backbone", sorted(SOURCES))
def test_recipe_config_parses_to_its_sources_settings(backbone):
    path = CONFIGS / f"{backbone}_audioset.yaml"
    model_args, data_args, augmentation, args = train_recipe.parse_arguments([str(path)])
    found = {**vars(model_args), **vars(data_args), **augmentation.to_dict(), **vars(args)}
    expected = dict(SOURCES[backbone])
    assert model_args.backbone == backbone
    frontend = frontend_of(backbone, model_args.frontend)
    assert frontend["sampling_rate"] == expected.pop("sampling_rate")
    if "shift_samples" in expected:
        assert round(augmentation.time_shift_s * frontend["sampling_rate"]) == expected.pop("shift_samples")
    assert (args.max_grad_norm >= 1e8) is not expected.pop("clips", True)  # no gradient clipping in the source
    assert (args.ema_decay is not None) is expected.pop("ema")  # the source reports averaged weights
    for key, value in expected.items():
        assert found[key] == pytest.approx(value) if isinstance(value, float) else found[key] == value, key
    # The new heads train faster than the pretrained backbone; the source's rate is the backbone's.
    assert args.learning_rate == 1e-3 and args.learning_rate > args.backbone_learning_rate
    assert data_args.max_length_s == 10.0 and reproduce.report_split(data_args) == "test"


@pytest.mark.parametrize("backbone", sorted(SOURCES))
def test_recipe_config_keeps_the_papers_spa_settings_and_no_stale_notes(backbone):
    path = CONFIGS / f"{backbone}_audioset.yaml"
    model_args, _, _, _ = train_recipe.parse_arguments([str(path)])
    assert (model_args.spa_alpha, model_args.description_style) == (0.3, "concat")
    assert model_args.classification_loss == "obce" and model_args.baseline is None
    assert (model_args.text_encoder, model_args.projection_dim) == ("google-bert/bert-base-uncased", 512)
    text = path.read_text().lower()
    for stale in ("not supported", "not expressible", "next issue", "not yet in train.py", "one adamw group"):
        assert stale not in text, stale


@pytest.mark.parametrize("backbone", ["passt", "ast", "psla"])
def test_spec_augment_fills_with_zero_before_normalisation_as_the_sources(backbone):
    model_args, _, augmentation, _ = train_recipe.parse_arguments([str(CONFIGS / f"{backbone}_audioset.yaml")])
    frontend = frontend_of(backbone, model_args.frontend)
    zero_after = (0.0 - frontend["normalize_mean"]) / frontend["normalize_std"]
    assert augmentation.mask_value == pytest.approx(zero_after, abs=1e-3)
