"""recipes/spa_study.py's aggregation, statistics and choice on made-up run results (no training), its variants'
flags as train.py parses them, and the demo's settings against the study's committed choice."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from recipe_loader import load_recipe

REPO = Path(__file__).resolve().parents[2]


study = load_recipe("spa_study")
reproduce = study.load_reproduce()
train_recipe = reproduce.load_train_module()

SEEDS = [0, 1, 2, 3, 4]
BASE_OMAP = [0.60, 0.62, 0.61, 0.65, 0.63]
# Per variant, (validation OmAP, test OmAP) offsets to the baseline per seed. "geometry" wins on test but not on
# validation: the study must choose "contrastive", which wins on validation.
OFFSETS = {
    "wo_spa": ([0.0] * 5, [0.0] * 5),
    "paper": ([-0.01] * 5, [-0.02, -0.01, -0.03, -0.02, -0.02]),
    "contrastive": ([0.01, 0.02, 0.03, 0.04, 0.05], [0.01, -0.02, 0.03, 0.04, 0.05]),
    "geometry": ([0.0, 0.01, 0.0, 0.01, 0.0], [0.10] * 5),
}


def fake_run(run_dir: Path, validation_omap: float, test_omap: float, epochs: int = 3) -> None:
    """The two files of a finished train.py run that the study reads."""
    (run_dir / "model").mkdir(parents=True)
    common = {"text_cos_mean": 0.41, "label_cos_mean": 0.5, "label_ontology_spearman": 0.6, "audio_cos_margin": 0.1,
              "audio_label_auc": 0.7, "omap_per_lambda": [0.5, 1.0]}  # fmt: skip
    results = {split: {"map": omap / 2, "omap": omap, **common}
               for split, omap in (("validation", validation_omap), ("test", test_omap))}  # fmt: skip
    (run_dir / "model" / "eval_results.json").write_text(json.dumps(results))
    history = [{"epoch": e, **{f"eval_{k}": v + 0.1 * e for k, v in common.items() if k != "omap_per_lambda"}}
               for e in range(epochs)]  # fmt: skip
    (run_dir / "history.json").write_text(json.dumps(history))


@pytest.fixture
def fake_study(tmp_path):
    runs = study.plan_runs(reproduce, list(OFFSETS), SEEDS)
    for run in runs:
        validation, test = OFFSETS[run.name]
        index = SEEDS.index(run.seed)
        fake_run(run.directory(tmp_path), BASE_OMAP[index] + validation[index], BASE_OMAP[index] + test[index])
    return runs, tmp_path


def test_runs_are_planned_variant_by_variant():
    runs = study.plan_runs(reproduce, ["wo_spa", "paper"], [0, 1])
    assert [(r.name, r.seed) for r in runs] == [("wo_spa", 0), ("wo_spa", 1), ("paper", 0), ("paper", 1)]
    assert runs[0].arguments[:2] == ("--baseline", "wo_spa")


def test_summary_pairs_by_seed_and_chooses_on_validation(fake_study):
    runs, root = fake_study
    summary = study.summarize(study.collect(runs, root))
    assert summary["variants"]["wo_spa"]["test"]["omap"]["values"] == pytest.approx(BASE_OMAP)
    assert summary["variants"]["contrastive"]["validation"]["omap"]["mean"] == pytest.approx(0.652)
    assert summary["variants"]["paper"]["test"]["label_cos_mean"]["mean"] == pytest.approx(0.5)
    # contrastive − baseline on validation: differences 0.01..0.05, t = 0.03 / (0.0158 / √5) = 4.243, df 4.
    validation = summary["comparisons"]["contrastive"]["vs_wo_spa"]["validation"]["omap"]
    assert validation["difference"]["mean"] == pytest.approx(0.03)
    assert validation["t_statistic"] == pytest.approx(4.2426407, rel=1e-6)
    assert validation["t_p"] == pytest.approx(0.0132356, rel=1e-4)
    assert validation["wilcoxon_p"] == pytest.approx(0.0625)  # 2 of the 32 sign patterns: the smallest p at n = 5
    test = summary["comparisons"]["contrastive"]["vs_wo_spa"]["test"]["omap"]
    assert test["wilcoxon_p"] == pytest.approx(6 / 32)  # one negative difference, of rank 2: W = 2
    assert summary["comparisons"]["contrastive"]["vs_paper"]["test"]["omap"]["difference"]["values"] == pytest.approx(
        [0.03, -0.01, 0.06, 0.06, 0.07]
    )
    assert "vs_paper" not in summary["comparisons"]["paper"] and "wo_spa" not in summary["comparisons"]
    choice = summary["choice"]
    assert choice["variant"] == "contrastive"  # geometry's +0.10 on test does not count
    assert choice["ranking_by_validation_omap"] == ["contrastive", "geometry", "wo_spa", "paper"]
    assert choice["baseline_ranks"] == 3
    assert choice["test_vs_baseline"]["omap"] == test


def test_pairs_need_the_same_seeds(fake_study):
    runs, root = fake_study
    results = study.collect(runs, root)
    results["paper"]["seeds"] = [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="other seeds"):
        study.summarize(results)


def test_markdown_and_merged_results(fake_study, tmp_path):
    runs, root = fake_study
    summary = study.summarize(study.collect(runs, root))
    markdown = study.study_markdown(summary, {"task": "real", "dataset": "real_sounds/mixtures"})
    assert "| contrastive, τ 0.1 | 0.326 ± 0.016 | 0.652 ± 0.033 |" in markdown
    assert "+0.030 ± 0.016 (t 0.013, W 0.062)" in markdown
    assert "Chosen by mean validation OmAP: **contrastive, τ 0.1**" in markdown
    path = tmp_path / "results.json"
    study.merge_results(path, "synthetic", {"old": True})
    study.merge_results(path, "real", {"a": 1})
    study.merge_results(path, "real", {"a": 2})
    assert json.loads(path.read_text()) == {"synthetic": {"old": True}, "real": {"a": 2}}


def test_diagnostics_plot_of_the_study(fake_study, tmp_path):
    import matplotlib.image

    runs, root = fake_study
    path = study.write_plot(study.collect(runs, root), "contrastive", tmp_path / "diagnostics.png")
    assert matplotlib.image.imread(path).shape == (408, 1080, 4)


@pytest.mark.parametrize("config_objective", ["paper", "contrastive"])
def test_variants_set_every_objective_flag(tmp_path, config_objective):
    """Whatever the config says, each variant trains its own objective."""
    config = yaml.safe_load((REPO / "recipes" / "configs" / "demo.yaml").read_text())
    config |= {"spa_objective": config_objective, "center_label_text": True, "spa_geometry_weight": 2.0}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    expected = {  # name: (α, objective, uniformity, geometry, frozen, centred)
        "wo_spa": (0.0, "paper", 0.0, 0.0, False, False),
        "paper": (0.3, "paper", 0.0, 0.0, False, False),
        "contrastive": (0.3, "contrastive", 0.0, 0.0, False, False),
        "frozen": (0.3, "paper", 0.0, 0.0, True, False),
        "geometry": (0.3, "paper", 0.0, 1.0, False, False),
        "contrastive_centred": (0.3, "contrastive", 0.0, 0.0, False, True),
        "uniformity": (0.3, "paper", 0.5, 0.0, False, False),
        "centred_frozen": (0.3, "paper", 0.0, 0.0, True, True),
    }
    assert set(expected) == set(study.VARIANTS)
    for name, (_, flags) in study.VARIANTS.items():
        model_args = train_recipe.parse_arguments([str(path), "--spa_alpha", "0.3", *flags])[0]
        fields = ("spa_alpha", "spa_objective", "spa_uniformity_weight", "spa_geometry_weight",
                  "freeze_text_projection", "center_label_text")  # fmt: skip
        assert tuple(getattr(model_args, f) for f in fields) == expected[name], name
        assert model_args.spa_temperature == 0.1


def test_a_changed_demo_objective_keeps_the_study_runs(tmp_path):
    """The runs' record leaves out the config's objective (each variant sets it), not its other settings."""
    config = yaml.safe_load((REPO / "recipes" / "configs" / "demo.yaml").read_text())
    records = []
    for changes in ({}, {"spa_objective": "contrastive", "freeze_text_projection": True}, {"num_epochs": 9}):
        path = tmp_path / f"c{len(records)}.yaml"
        path.write_text(yaml.safe_dump(config | changes))
        run = reproduce.Run("paper", 0, study.VARIANTS["paper"][1])
        command = reproduce.train_command(study.LAUNCH, path, ["--spa_alpha", "0.3"], run, tmp_path / "run")
        records.append(study.study_settings(reproduce, path, command))
    assert records[0] == records[1] != records[2]


def test_demo_trains_the_studys_choice():
    """recipes/configs/demo.yaml alone trains the variant the study chose on validation (the real task)."""
    results = json.loads((REPO / "recipes" / "results" / "spa_study.json").read_text())
    chosen = results["real"]["choice"]["variant"]
    config = str(REPO / "recipes" / "configs" / "demo.yaml")
    fields = ("spa_alpha", "spa_objective", "spa_temperature", "spa_uniformity_weight", "spa_geometry_weight",
              "freeze_text_projection", "center_label_text")  # fmt: skip
    as_configured = train_recipe.parse_arguments([config])[0]
    as_studied = train_recipe.parse_arguments([config, "--spa_alpha", "0.3", *study.VARIANTS[chosen][1]])[0]
    assert [getattr(as_configured, f) for f in fields] == [getattr(as_studied, f) for f in fields]


def test_committed_results_choose_by_validation():
    """The committed JSON's choice is its best mean validation OmAP among the SPA variants."""
    results = json.loads((REPO / "recipes" / "results" / "spa_study.json").read_text())
    for task in results.values():
        means = {name: v["validation"]["omap"]["mean"] for name, v in task["variants"].items() if name != "wo_spa"}
        assert task["choice"]["variant"] == max(means, key=means.get)
        assert len(task["seeds"]) >= 5
        for variant in task["variants"].values():
            assert len(variant["test"]["omap"]["values"]) == len(task["seeds"])
            assert np.isclose(np.mean(variant["test"]["omap"]["values"]), variant["test"]["omap"]["mean"])


def test_library_defaults_are_the_studys_choice():
    """SPAConfig's and train.py's defaults are the variant the study chose on the real task's validation split."""
    from dataclasses import fields

    from modeling_spa import SPAConfig

    chosen = json.loads((REPO / "recipes" / "results" / "spa_study.json").read_text())["real"]["choice"]["variant"]
    flags = study.VARIANTS[chosen][1]
    recipe_defaults = {f.name: f.default for f in fields(train_recipe.ModelArguments)}
    config = SPAConfig()
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        name = flag.removeprefix("--")
        for default in (getattr(config, name), recipe_defaults[name]):
            assert str(default) == value or (isinstance(default, float) and default == float(value)), name


def test_a_failed_run_cancels_the_queued_runs():
    started = []

    def run(index):
        started.append(index)
        if index == 0:
            raise SystemExit("run 0 failed")
        time.sleep(0.5)  # a run takes a while: the failure is seen before the queue drains

    with pytest.raises(SystemExit, match="run 0 failed"):
        study.run_parallel(run, [(i,) for i in range(6)], jobs=1)
    assert started in ([0], [0, 1])  # at most the run the worker had already taken; the others never start


@pytest.mark.parametrize("flag", ["--spa_alpha", "--seed", "--baseline"])
def test_flags_the_study_sets_are_not_passed_through(flag, capsys):
    with pytest.raises(SystemExit):
        study.parse_args(["--task", "real", flag, "1"])
    assert "is set by the study" in capsys.readouterr().err
