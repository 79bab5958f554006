"""Label-text geometry (the paper's Fig. 1, measured): t-SNE of the label descriptions and how their neighbourhoods
follow the ontology, per description style, and after p_t for trained checkpoints.

    python recipes/analyze_label_text.py [--text_encoder sentence-transformers/all-MiniLM-L6-v2] \
        [--styles direct prompt desc concat] [--checkpoint MODEL_DIR ...] [--k 10] [--checkpoint_k 5] \
        [--classes CLASSES_JSON | --first_labels N] [--output_dir outputs/label_text]

For the text encoder and each style, the descriptions of the labels (default: AudioSet's 527) are embedded as
`from_backbone` embeds them (`encode_label_descriptions`), and for each checkpoint its own T̂ (the
`label_text_embeds` buffer) and E_t = p_t(T̂) come from its weights alone (no text encoder, no ontology files: the
distances and categories are in the checkpoint). The figures (`modeling_spa.analysis.label_geometry`): Spearman between
cosine distance and ontology hop distance over label pairs, k-nearest-neighbour purity of the top-level category
and its chance level, the mean pairwise cosine.

Writes to OUTPUT_DIR: geometry.json, geometry.md (the tables), tsne_<encoder>.png (one panel per style) and
tsne_<checkpoint>.png (T̂ and E_t side by side, labels named).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from modeling_spa import SPAForAudioClassification
from modeling_spa.analysis.label_geometry import label_geometry, plot_tsne, top_level_names, tsne
from modeling_spa.analysis.reporting import markdown_table
from modeling_spa.label_text import CONCAT_SEPARATOR, DESCRIPTION_STYLES, encode_label_descriptions
from modeling_spa.taxonomy import AudioSetOntology

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text_encoder", default=DEFAULT_ENCODER, help="a transformers text encoder (id or path)")
    parser.add_argument("--text_pooling", default="mean", help="mean, cls or pooler")
    parser.add_argument("--styles", nargs="*", default=list(DESCRIPTION_STYLES), choices=DESCRIPTION_STYLES)
    parser.add_argument("--checkpoint", nargs="*", default=[], help="SPA checkpoints: T̂ and E_t from their buffers")
    parser.add_argument("--k", type=int, default=10, help="neighbours for the purity of the text encoder's labels")
    parser.add_argument("--checkpoint_k", type=int, default=5, help="neighbours for checkpoints (fewer labels)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--classes", help="a JSON list of mids (or {'mids': [...]}) instead of the 527 labels")
    labels.add_argument("--first_labels", type=int, help="only the first N AudioSet labels (a quick look)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE's")
    parser.add_argument("--output_dir", default="outputs/label_text")
    return parser.parse_args(argv)


def slug(name: str) -> str:
    """A file-name-safe form of an encoder id or a checkpoint path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("/")).strip("_")


def figure_line(figures: dict) -> str:
    """A panel's subtitle: the rank correlation and the purity."""
    return f"Spearman {figures['ontology_spearman']:.2f}, {figures['k']}-NN purity {figures['knn_purity']:.2f}"


def label_mids(args: argparse.Namespace, ontology: AudioSetOntology) -> list[str]:
    if args.classes:
        classes = json.loads(Path(args.classes).read_text())
        return classes["mids"] if isinstance(classes, dict) else classes
    return ontology.label_mids[: args.first_labels] if args.first_labels else ontology.label_mids


def encoder_rows(args, ontology: AudioSetOntology, mids: list[str], output: Path) -> list[dict]:
    """Each style's figures for the text encoder, and one t-SNE figure with a panel per style."""
    distances = torch.from_numpy(ontology.distances_for(mids))
    groups = top_level_names(ontology.descriptions("concat", mids))
    rows, panels = [], []
    for style in args.styles:
        embeds = encode_label_descriptions(ontology.descriptions(style, mids), args.text_encoder,
                                           pooling=args.text_pooling)  # fmt: skip
        figures = label_geometry(embeds, distances, groups, min(args.k, len(mids) - 1))
        rows.append({"source": args.text_encoder, "embeddings": f"T̂, {style}", "style": style, **figures})
        panels.append((f"{style}\n{figure_line(figures)}, chance {figures['knn_chance']:.2f}", tsne(embeds, args.seed)))
    title = f"{args.text_encoder}: {len(mids)} AudioSet label descriptions (t-SNE), by top-level category"
    plot_tsne(panels, groups, output / f"tsne_{slug(args.text_encoder)}.png", title)
    return rows


def checkpoint_name(path: str) -> str:
    """A checkpoint's short name: its run folder (the parent of a `model` folder), with the variant in front of a
    `seed_N` folder, so that runs of several variants (`paper/seed_0`, `wo_spa/seed_0`) get distinct figures."""
    folder = Path(path).resolve()
    folder = folder.parent if folder.name == "model" else folder
    return f"{folder.parent.name}/{folder.name}" if re.fullmatch(r"seed_\d+", folder.name) else folder.name


@torch.no_grad()
def checkpoint_rows(path: str, k: int, seed: int, output: Path) -> list[dict]:
    """T̂ and E_t = p_t(T̂) of a checkpoint, from its buffers, and their t-SNE side by side."""
    model = SPAForAudioClassification.from_pretrained(path).eval()
    config = model.config
    if not config.label_paths:
        raise SystemExit(f"{path}: the checkpoint records no label paths, so no top-level categories.")
    groups = top_level_names(config.label_paths)
    k = min(k, config.num_labels - 1)
    name = checkpoint_name(path)
    objective = (
        "α = 0 (p_t untrained)" if config.spa_alpha == 0 else f"{config.spa_objective}, α = {config.spa_alpha:g}"
    )
    options = [o for o in ("center_label_text", "freeze_text_projection") if getattr(config, o)]
    options += [f"{o} {getattr(config, o):g}" for o in ("spa_uniformity_weight", "spa_geometry_weight")
                if getattr(config, o)]  # fmt: skip
    described = objective + "".join(f", {o}" for o in options)
    rows, panels = [], []
    for which, embeds in (("T̂ (text encoder)", model.label_text_embeds), ("E_t = p_t(T̂)", model.label_embeds())):
        figures = label_geometry(embeds, model.label_distances, groups, k)
        rows.append({"source": f"{name} ({described})", "embeddings": which, "style": config.description_style,
                     "checkpoint": str(path), **figures})  # fmt: skip
        panels.append((f"{which}\n{figure_line(figures)}, mean cos {figures['cos_mean']:.2f}", tsne(embeds, seed)))
    names = [label_path.split(CONCAT_SEPARATOR)[-1] for label_path in config.label_paths]  # short names
    title = f"{name}: {described}; {config.num_labels} labels, {config.description_style} descriptions"
    plot_tsne(panels, groups, output / f"tsne_{slug(name)}.png", title, names=names)
    return rows


def markdown(rows: list[dict]) -> str:
    header = ["embeddings", "labels", "Spearman (1 − cos vs hops)", "k-NN purity (k)", "chance", "mean cos"]
    lines, sources = [], dict.fromkeys(row["source"] for row in rows)
    for source in sources:
        body = [[row["embeddings"], str(row["n_labels"]), f"{row['ontology_spearman']:.3f}",
                 f"{row['knn_purity']:.3f} ({row['k']})", f"{row['knn_chance']:.3f}", f"{row['cos_mean']:.3f}"]
                for row in rows if row["source"] == source]  # fmt: skip
        lines += [f"**{source}**", "", markdown_table(header, body), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    ontology = AudioSetOntology.load()
    rows = encoder_rows(args, ontology, label_mids(args, ontology), output) if args.styles else []
    for path in args.checkpoint:
        rows += checkpoint_rows(path, args.checkpoint_k, args.seed, output)
    (output / "geometry.json").write_text(json.dumps(rows, indent=2))
    text = markdown(rows)
    (output / "geometry.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
