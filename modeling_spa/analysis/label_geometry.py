"""Label-text geometry: do the label embeddings' neighbourhoods follow the ontology? (The paper's Fig. 1 shows a
t-SNE of the label texts; these are the numbers it does not give.)

For embeddings of C labels (rows), their ontology hop distances (C, C) and their top-level categories:
- `ontology_spearman`: Spearman's rank correlation, over the C(C - 1)/2 pairs of distinct labels, between the cosine
  distance 1 - cos and the hop distance (`diagnostics.ontology_rank_correlation`, the collapse diagnostics' figure).
- `knn_purity`: for each label, the share of its k nearest other labels (by cosine) in its own top-level category,
  averaged over the labels. Ties in cosine are broken by label order (a stable sort), so the figure is deterministic.
- `knn_chance`: what `knn_purity` is in expectation when the neighbours are drawn at random: the mean over the labels
  of (size of its category - 1) / (C - 1). Categories are unequal (Music holds about a third of AudioSet's labels),
  so chance is well above 1/7.
- `cos_mean`: the mean pairwise cosine (`diagnostics.cosine_summary`): near 1, a collapsed space.

A label's top-level category is the first node of its `concat` path (`AudioSetOntology.path_to_top`, whose tie-break
decides for the labels with several parents), so a checkpoint's `label_paths` give it without the ontology files.
`tsne` and `plot_tsne` draw the labels in two dimensions, coloured by category.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..label_text import CONCAT_SEPARATOR
from ..losses import pairwise_cosine
from .diagnostics import cosine_summary, ontology_rank_correlation
from .reporting import save_figure

GEOMETRY_KEYS = ("ontology_spearman", "knn_purity", "knn_chance", "k", "cos_mean", "n_labels")


def top_level_names(paths: Sequence[str]) -> list[str]:
    """Each label's top-level category: the first name of its ontology path ("Animal > Domestic animals > Dog")."""
    return [path.split(CONCAT_SEPARATOR)[0] for path in paths]


def nearest_neighbours(embeds: torch.Tensor, k: int) -> np.ndarray:
    """(C, k) indices of each row's k nearest other rows by cosine, nearest first (ties: the lower index first)."""
    if not 0 < k < embeds.shape[0]:
        raise ValueError(f"k must be between 1 and the number of labels - 1 ({embeds.shape[0] - 1}), got {k}")
    cosine = pairwise_cosine(embeds.detach()).double().cpu().numpy()
    np.fill_diagonal(cosine, -np.inf)  # a label is not its own neighbour
    return np.argsort(-cosine, axis=1, kind="stable")[:, :k]


def knn_purity(embeds: torch.Tensor, groups: Sequence[str], k: int) -> float:
    """Mean over the labels of the share of their k nearest other labels (cosine) that are in their own group."""
    groups = np.asarray(groups)
    neighbours = nearest_neighbours(embeds, k)
    return float((groups[neighbours] == groups[:, None]).mean())


def chance_purity(groups: Sequence[str]) -> float:
    """The expected `knn_purity` of random neighbours: mean over labels of (own group size - 1) / (labels - 1)."""
    sizes = Counter(groups)
    return float(np.mean([(sizes[group] - 1) / (len(groups) - 1) for group in groups]))


def label_geometry(embeds: torch.Tensor, distances: torch.Tensor, groups: Sequence[str], k: int) -> dict:
    """The module docstring's figures for the label embeddings `embeds` (C, D), hop `distances` (C, C) and
    top-level `groups` (C,)."""
    if not (len(embeds) == len(distances) == len(groups)):
        raise ValueError(f"{len(embeds)} embeddings, {len(distances)} distance rows and {len(groups)} groups differ")
    return {
        "ontology_spearman": ontology_rank_correlation(embeds, torch.as_tensor(distances)),
        "knn_purity": knn_purity(embeds, groups, k),
        "knn_chance": chance_purity(groups),
        "k": k,
        "cos_mean": cosine_summary(embeds)[0],
        "n_labels": len(groups),
    }


def tsne(embeds: torch.Tensor, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, cosine metric, PCA initialisation) of the rows of `embeds`: (C, 2). The perplexity
    is capped at (C - 1) / 3, which t-SNE needs for few labels."""
    from sklearn.manifold import TSNE

    points = embeds.detach().double().cpu().numpy()
    perplexity = min(perplexity, (len(points) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
        points
    )


# One colour per top-level category, fixed so that every figure reads alike (matplotlib's tab10).
CATEGORY_COLOURS = {
    "Human sounds": "tab:red",
    "Animal": "tab:green",
    "Music": "tab:blue",
    "Sounds of things": "tab:orange",
    "Natural sounds": "tab:brown",
    "Source-ambiguous sounds": "tab:purple",
    "Channel, environment and background": "tab:gray",
}


def plot_tsne(
    panels: Sequence[tuple[str, np.ndarray]],
    groups: Sequence[str],
    path: str | Path,
    title: str = "",
    names: Sequence[str] | None = None,
    columns: int = 2,
) -> Path:
    """Panels of 2-D label points (title, (C, 2) coordinates), coloured by top-level category, one legend with each
    category's label count; with `names`, every point is labelled (for a few dozen labels). PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    groups = np.asarray(groups)
    order = [g for g in CATEGORY_COLOURS if g in set(groups)] + sorted(set(groups) - set(CATEGORY_COLOURS))
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.4 * rows + 0.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, (panel_title, points) in zip(axes.flat, panels, strict=False):
        for group in order:
            mine = groups == group
            ax.scatter(*points[mine].T, s=14 if names is None else 36, color=CATEGORY_COLOURS.get(group),
                       linewidths=0, label=f"{group} ({int(mine.sum())})")  # fmt: skip
        if names is not None:
            for (x, y), name in zip(points, names, strict=True):
                ax.annotate(name, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
            ax.margins(0.18)  # room for the names at the edges
        ax.set_title(panel_title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])  # t-SNE axes have no units: only the neighbourhoods mean something
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=9, markerscale=1.5,
               frameon=False)  # fmt: skip
    return save_figure(fig, path, title)


__all__ = [
    "CATEGORY_COLOURS",
    "GEOMETRY_KEYS",
    "chance_purity",
    "knn_purity",
    "label_geometry",
    "nearest_neighbours",
    "plot_tsne",
    "top_level_names",
    "tsne",
]
