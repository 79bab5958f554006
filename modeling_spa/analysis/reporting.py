"""The SPA paper's result tables and its Fig. 3, from evaluation results (`eval_results.json` of recipes/train.py),
and the training curves of runs, from their `history.json`.

Used by recipes/demo.py (one seed, a mini Table 1), recipes/reproduce.py (several seeds, Tables 1 and 2) and
recipes/spa_study.py (variants over seeds, paired tests, the collapse diagnostics per epoch). A cell over several
seeds is "mean ± std" with the sample standard deviation (ddof 1) across seeds; over one seed it is the value alone.
Differences between two models are paired: per seed first (both trained with that seed), then summarised, so their
spread is that of the paired differences, not of the two rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Stat:
    """One table cell's numbers: a value per seed."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float | None:
        """The sample standard deviation across seeds; None for a single seed (no spread to estimate)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "values": list(self.values)}


def stat(values: Sequence[float]) -> Stat:
    if not len(values):
        raise ValueError("a table cell needs at least one value")
    return Stat(tuple(float(v) for v in values))


def paired_difference(minuend: Sequence[float], subtrahend: Sequence[float]) -> Stat:
    """Per-seed differences minuend − subtrahend (both lists in the same seed order)."""
    if len(minuend) != len(subtrahend):
        raise ValueError(f"paired differences need as many values on both sides ({len(minuend)} vs {len(subtrahend)})")
    return stat([a - b for a, b in zip(minuend, subtrahend, strict=True)])


def paired_test(minuend: Sequence[float], subtrahend: Sequence[float]) -> dict:
    """The paired differences minuend − subtrahend (`Stat.to_dict`) and two-sided p-values of the paired t-test and
    of the Wilcoxon signed-rank test (scipy; exact for small n without ties). With n = 5, no Wilcoxon p falls below
    0.0625, whatever the data: report both. A p-value is None where the test is undefined (differences all equal,
    or all zero for Wilcoxon)."""
    from scipy import stats

    difference = paired_difference(minuend, subtrahend)
    values = np.asarray(difference.values)
    constant = len(values) < 2 or np.ptp(values) == 0
    t_test = None if constant else stats.ttest_rel(minuend, subtrahend)
    wilcoxon = None if not np.any(values) else stats.wilcoxon(values)
    return {
        "difference": difference.to_dict(),
        "n": len(values),
        "t_statistic": None if t_test is None else float(t_test.statistic),
        "t_p": None if t_test is None else float(t_test.pvalue),
        "wilcoxon_p": None if wilcoxon is None else float(wilcoxon.pvalue),
    }


def format_stat(cell: Stat, signed: bool = False, digits: int = 4) -> str:
    """A cell: 0.5302, +0.0120 (signed), or 0.5302 ± 0.0031 over several seeds."""
    number = f"{cell.mean:+.{digits}f}" if signed else f"{cell.mean:.{digits}f}"
    return number if cell.std is None else f"{number} ± {cell.std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table: the first column left-aligned (row names), the others right-aligned (numbers)."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def omap_lambda_differences(spa: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]]) -> np.ndarray:
    """(seeds, levels): OmAP_λ(SPA) − OmAP_λ(baseline) per seed, from each run's `omap_per_lambda`."""
    spa_array, base_array = np.asarray(spa, dtype=float), np.asarray(baseline, dtype=float)
    if spa_array.shape != base_array.shape or spa_array.ndim != 2:
        raise ValueError(f"OmAP_λ curves differ in shape: {spa_array.shape} vs {base_array.shape}")
    return spa_array - base_array


def plot_omap_lambda_difference(
    differences: np.ndarray,
    path: str | Path,
    title: str = "Effect of SPA at each ontology level (cf. paper Fig. 3)",
    ylabel: str = "OmAP_λ(SPA) − OmAP_λ(baseline)",
) -> Path:
    """The paper's Fig. 3: one bar per level λ, the mean difference over seeds (green above 0, red below); with
    several seeds, error bars of ± one sample std and each seed's value as a dot. Written as PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    differences = np.atleast_2d(np.asarray(differences, dtype=float))
    mean = differences.mean(axis=0)
    levels = np.arange(differences.shape[1])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    several = differences.shape[0] > 1
    yerr = differences.std(axis=0, ddof=1) if several else None
    ax.bar(levels, mean, color=np.where(mean >= 0, "tab:green", "tab:red"), yerr=yerr, capsize=2 if several else 0)
    if several:
        for row in differences:
            ax.plot(levels, row, linestyle="none", marker=".", markersize=3, color="black", alpha=0.6)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("coarse level λ")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(levels)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


DIAGNOSTIC_CURVES = ("label_cos_mean", "audio_cos_margin", "text_cos_mean")


def diagnostic_curves(histories: Sequence[Sequence[dict]], keys: Sequence[str] = DIAGNOSTIC_CURVES) -> dict:
    """(seeds, epochs) arrays of the evaluation split's diagnostics after each epoch, from runs' `history.json`
    (train.py records them as `eval_<name>`), one run per seed."""
    lengths = {len(history) for history in histories}
    if len(lengths) != 1:
        raise ValueError(f"runs with different numbers of epochs cannot be averaged: {sorted(lengths)}")
    return {key: np.array([[epoch[f"eval_{key}"] for epoch in history] for history in histories]) for key in keys}


def plot_collapse_diagnostics(
    curves: dict[str, dict[str, np.ndarray]],
    path: str | Path,
    title: str = "Label-space collapse per epoch (evaluation split)",
) -> Path:
    """Two panels per epoch: the mean pairwise cosine of the label embeddings E_t (near 1: collapsed; the text
    encoder's T̂ dashed, for reference) and the mean cosine margin of E_a to its labels over the other labels. One line
    per model (`curves`: name -> `diagnostic_curves`), the mean over seeds, shaded ± one sample std over several."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    panels = (("label_cos_mean", "E_t mean pairwise cosine"), ("audio_cos_margin", "cos margin: labels − others"))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for name, curve in curves.items():
            values = np.atleast_2d(np.asarray(curve[key], dtype=float))
            epochs = np.arange(1, values.shape[1] + 1)
            mean = values.mean(axis=0)
            (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=name)
            if values.shape[0] > 1:
                spread = values.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - spread, mean + spread, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_xticks(epochs)
    text = next((np.asarray(c["text_cos_mean"], dtype=float) for c in curves.values() if "text_cos_mean" in c), None)
    if text is not None:
        axes[0].axhline(float(text.mean()), color="grey", linestyle="--", linewidth=1, label="T̂ (text encoder)")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# The curves people look at, per epoch, from `history.json` (recipes/train.py): panel title -> (key, line style) pairs.
CURVE_PANELS = {
    "training losses (epoch means)": (("train_loss", "-"), ("train_spa_loss", "--")),
    "validation mAP / OmAP": (("eval_map", "-"), ("eval_omap", "--")),
    "label space: E_t mean cos / Spearman to ontology": (("eval_label_cos_mean", "-"),
                                                          ("eval_label_ontology_spearman", "--")),
    "audio-label alignment: AUC / cos margin": (("eval_audio_label_auc", "-"), ("eval_audio_cos_margin", "--")),
}  # fmt: skip


def plot_training_curves(histories: dict[str, Sequence[dict]], path: str | Path, title: str = "") -> Path:
    """The per-epoch curves of one or more runs (name -> its `history.json` entries): losses, mAP and OmAP, and the
    label-space diagnostics (`modeling_spa.analysis.diagnostics`), one panel each (`CURVE_PANELS`), one colour per
    run, one line style per quantity. A quantity a run did not record (L_SPA of a baseline) is left out. PNG at
    `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (panel, curves) in zip(axes.flat, CURVE_PANELS.items(), strict=True):
        for (name, history), colour in zip(histories.items(), colours, strict=False):
            for key, style in curves:
                points = [(entry["epoch"], entry[key]) for entry in history if entry.get(key) is not None]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=colour, marker=".", label=f"{name}: {key}")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        styles = [plt.Line2D([], [], color="black", linestyle=style, label=key) for key, style in curves]
        ax.legend(handles=styles, fontsize=8, loc="best")
    runs = [
        plt.Line2D([], [], color=colour, linewidth=3, label=name)
        for name, colour in zip(histories, colours, strict=False)
    ]
    fig.legend(handles=runs, loc="outside lower center", ncol=len(runs), frameon=False)
    return save_figure(fig, path, title)


def save_figure(fig, path: str | Path, title: str = "", dpi: int = 90) -> Path:
    """Title (if any), write and close a figure: a long-running recipe must not keep every figure it drew."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


__all__ = [
    "CURVE_PANELS",
    "Stat",
    "diagnostic_curves",
    "format_stat",
    "markdown_table",
    "omap_lambda_differences",
    "paired_difference",
    "paired_test",
    "plot_collapse_diagnostics",
    "plot_omap_lambda_difference",
    "plot_training_curves",
    "save_figure",
    "stat",
]


CV_METRICS = ("accuracy", "map", "omap")


def cross_validation_summary(per_fold: dict[str, dict], metrics: Sequence[str] = CV_METRICS) -> dict:
    """Cross-validation figures: per metric, mean ± sample std over the folds and each fold's value (`Stat.to_dict`),
    from each fold's test metrics (fold -> {metric: value}); a metric missing in any fold (OmAP of a flat label list,
    accuracy of a multi-label task) is left out, as are None values."""
    if not per_fold:
        raise ValueError("No fold has results.")
    summary = {"folds": list(per_fold)}
    for metric in metrics:
        values = [fold.get(metric) for fold in per_fold.values()]
        if all(value is not None for value in values):
            summary[metric] = stat(values).to_dict()
    return summary


def cross_validation_table(summary: dict, metrics: Sequence[str] = CV_METRICS) -> str:
    """A markdown table of `cross_validation_summary`: one row per metric, mean ± std and the folds' values."""
    names = {"accuracy": "accuracy", "map": "mAP", "omap": "OmAP"}
    rows = [
        [names.get(m, m), format_stat(stat(summary[m]["values"])), " ".join(f"{v:.4f}" for v in summary[m]["values"])]
        for m in metrics
        if m in summary
    ]
    return markdown_table(["metric", f"mean ± std over {len(summary['folds'])} folds", "per fold"], rows)
