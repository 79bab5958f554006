"""The shared table, test and plot code (modeling_spa.analysis.reporting), and the demo's table through it."""

import numpy as np
import pytest
from recipe_loader import load_recipe

from modeling_spa.analysis.reporting import (
    diagnostic_curves,
    format_stat,
    markdown_table,
    omap_lambda_differences,
    paired_difference,
    paired_test,
    plot_collapse_diagnostics,
    plot_omap_lambda_difference,
    stat,
)


def test_cells_over_one_and_several_seeds():
    assert format_stat(stat([0.53021])) == "0.5302" and stat([0.5]).std is None
    assert format_stat(stat([0.4, 0.42])) == "0.4100 ± 0.0141"  # sample std, ddof 1
    assert format_stat(stat([-0.02899])) == "-0.0290" and format_stat(stat([0.012]), signed=True) == "+0.0120"
    assert stat([0.4, 0.42]).to_dict() == {"mean": pytest.approx(0.41), "std": pytest.approx(0.0141421, abs=1e-6),
                                           "values": [0.4, 0.42]}  # fmt: skip
    with pytest.raises(ValueError, match="at least one value"):
        stat([])


def test_differences_are_paired_by_seed():
    # Two seeds whose SPA run gains 0.01 each time: no spread in the difference, though the rows spread widely.
    spa, base = [0.50, 0.70], [0.49, 0.69]
    assert paired_difference(spa, base).values == pytest.approx((0.01, 0.01))
    assert paired_difference(spa, base).std == pytest.approx(0.0, abs=1e-12) and stat(spa).std > 0.1
    with pytest.raises(ValueError, match="as many values"):
        paired_difference([0.5], [0.4, 0.3])
    curves = omap_lambda_differences([[0.5, 1.0], [0.6, 1.0]], [[0.4, 1.0], [0.7, 1.0]])
    np.testing.assert_allclose(curves, [[0.1, 0.0], [-0.1, 0.0]], atol=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        omap_lambda_differences([[0.5, 1.0]], [[0.5, 1.0, 1.0]])


def test_markdown_table_aligns_numbers_right():
    table = markdown_table(["model", "mAP"], [["a", "0.1000"], ["b", "+0.0100"]])
    assert table.splitlines() == ["| model | mAP |", "|---|---:|", "| a | 0.1000 |", "| b | +0.0100 |"]


def test_figure3_with_several_seeds_has_error_bars(tmp_path):
    import matplotlib.image

    differences = np.array([[0.01, -0.02, 0.0], [0.03, -0.01, 0.0], [0.02, -0.03, 0.0]])
    path = plot_omap_lambda_difference(differences, tmp_path / "fig3.png", title="t")
    one = plot_omap_lambda_difference(differences[:1], tmp_path / "one.png", title="t")
    several, single = matplotlib.image.imread(path), matplotlib.image.imread(one)
    assert several.shape == single.shape == (384, 840, 4)
    assert not np.array_equal(several, single)  # the error bars and the seeds' dots are drawn


def test_demo_table_puts_its_seeds_beside_the_study():
    demo = load_recipe("demo")

    def runs(maps, omaps):
        return {"test": [{"map": m, "omap": o} for m, o in zip(maps, omaps, strict=True)]}

    results = {"wo_spa": runs([0.33, 0.35], [0.69, 0.71]), "paper": runs([0.31, 0.31], [0.68, 0.68]),
               "contrastive": runs([0.32, 0.36], [0.70, 0.74])}  # fmt: skip
    labels = {"wo_spa": "baseline", "paper": "paper", "contrastive": "contrastive"}
    cell = {"values": [0.30, 0.32]}
    variants = {name: {"test": {"map": cell, "omap": cell}} for name in ("wo_spa", "paper")}
    study = {"seeds": [0, 1, 2], "variants": variants,
             "comparisons": {"contrastive": {"vs_wo_spa": {"test": {
                 "map": {"difference": {"values": [0.01, 0.03]}, "t_p": 0.2952},
                 "omap": {"difference": {"values": [-0.01, 0.01]}, "t_p": None}}}}}}  # fmt: skip
    # Paired over the demo's seeds: mAP differences (-0.01, +0.01), t = 0, p = 1; OmAP (+0.01, +0.03): t = 0.02 /
    # (0.0141 / √2) = 2 with 1 degree of freedom, p = 1 − 2·atan(2)/π = 0.295.
    assert demo.table(results, labels, "contrastive", study, "real-recording") == (
        "| model (demo CNN, real-recording test split) | mAP, demo (2 seeds) | OmAP, demo (2 seeds) "
        "| mAP, study (3 seeds) | OmAP, study (3 seeds) |\n"
        "|---|---:|---:|---:|---:|\n"
        "| baseline | 0.3400 ± 0.0141 | 0.7000 ± 0.0141 | 0.3100 ± 0.0141 | 0.3100 ± 0.0141 |\n"
        "| paper | 0.3100 ± 0.0000 | 0.6800 ± 0.0000 | 0.3100 ± 0.0141 | 0.3100 ± 0.0141 |\n"
        "| contrastive | 0.3400 ± 0.0283 | 0.7200 ± 0.0283 |  |  |\n"  # no study row for it: empty cells
        "| contrastive − baseline | +0.0000 ± 0.0141 (p 1) | +0.0200 ± 0.0141 (p 0.3) "
        "| +0.0200 ± 0.0141 (p 0.3) | +0.0000 ± 0.0141 (p n/a) |"
    )


def test_paired_test_p_values():
    base = [0.60, 0.62, 0.61, 0.65, 0.63]
    up = [b + d for b, d in zip(base, [0.01, 0.02, 0.03, 0.04, 0.05], strict=True)]
    result = paired_test(up, base)
    # t = mean / (sd / √n) = 0.03 / (0.0158114 / √5) = 4.2426 with 4 degrees of freedom.
    assert result["t_statistic"] == pytest.approx(4.2426407, rel=1e-6)
    assert result["t_p"] == pytest.approx(0.0132356, rel=1e-4)
    assert result["wilcoxon_p"] == pytest.approx(2 / 32)  # all five positive: the smallest two-sided p at n = 5
    assert result["difference"]["mean"] == pytest.approx(0.03) and result["n"] == 5
    mixed = paired_test([b + d for b, d in zip(base, [0.01, -0.02, 0.03, 0.04, 0.05], strict=True)], base)
    assert mixed["wilcoxon_p"] == pytest.approx(6 / 32)  # one negative, of rank 2: W = 2
    constant = paired_test([b + 0.01 for b in base], base)
    assert constant["t_p"] is None and constant["wilcoxon_p"] == pytest.approx(2 / 32)
    same = paired_test(base, base)
    assert same["t_p"] is None and same["wilcoxon_p"] is None


def test_diagnostic_curves_from_histories():
    histories = [[{"eval_label_cos_mean": 0.9 + e / 100, "eval_audio_cos_margin": e, "eval_text_cos_mean": 0.4}
                  for e in range(3)] for _ in range(2)]  # fmt: skip
    curves = diagnostic_curves(histories)
    assert curves["label_cos_mean"].shape == (2, 3)
    np.testing.assert_allclose(curves["audio_cos_margin"][1], [0, 1, 2])
    with pytest.raises(ValueError, match="different numbers of epochs"):
        diagnostic_curves([histories[0], histories[1][:2]])


def test_collapse_diagnostics_plot(tmp_path):
    import matplotlib.image

    rising = {"label_cos_mean": [[0.5, 0.9, 0.99], [0.5, 0.8, 0.98]], "audio_cos_margin": [[0.1, 0.02, 0.01]] * 2,
              "text_cos_mean": [[0.41] * 3] * 2}  # fmt: skip
    flat = {"label_cos_mean": [[0.4, 0.4, 0.4]], "audio_cos_margin": [[0.0, 0.1, 0.2]]}
    path = plot_collapse_diagnostics({"paper": rising, "frozen": flat}, tmp_path / "d.png")
    one = plot_collapse_diagnostics({"paper": {k: v[:1] for k, v in rising.items()}}, tmp_path / "one.png")
    image, single = matplotlib.image.imread(path), matplotlib.image.imread(one)
    assert image.shape == single.shape == (408, 1080, 4)
    assert not np.array_equal(image, single)
    # Something is drawn in both panels: each half of the figure has coloured (non-grey) pixels.
    rgb = image[..., :3]
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3
    assert coloured[:, :540].any() and coloured[:, 540:].any()
