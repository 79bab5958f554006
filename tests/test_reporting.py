"""The shared table and Fig. 3 code (modeling_spa.reporting), and the demo's table through it, unchanged."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from modeling_spa.reporting import (
    format_stat,
    markdown_table,
    omap_lambda_differences,
    paired_difference,
    plot_omap_lambda_difference,
    stat,
)

REPO = Path(__file__).resolve().parent.parent


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


def test_demo_table_is_the_one_the_readme_shows():
    spec = importlib.util.spec_from_file_location("demo", REPO / "recipes" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = demo
    spec.loader.exec_module(demo)
    results = {"baseline": {"map": 0.53024, "omap": 0.75512}, "SPA": {"map": 0.50127, "omap": 0.74518}}
    assert demo.table(results) == (
        "| model (demo CNN, synthetic AudioSet-format test set) | mAP | OmAP |\n"
        "|---|---:|---:|\n"
        "| baseline, (BCE + OBCE)/2 | 0.5302 | 0.7551 |\n"
        "| + SPA (α = 0.3) | 0.5013 | 0.7452 |\n"
        "| difference | -0.0290 | -0.0099 |"
    )
