"""Model cards: the `hub_cards/model_card.md` template filled from a config and evaluation results.

The YAML header carries a `model-index` so the Hub shows the mAP and OmAP figures. The templates are the project's
`hub_cards/` folder, found by `modeling_spa.files.project_folder` (a wheel carries it inside the package).
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

from huggingface_hub import EvalResult, ModelCardData

from ..augmentation import AugmentationConfig
from ..files import project_folder
from ..frontends import describe_frontend

METRICS = (("map", "mAP"), ("omap", "OmAP"))
# The Hub copy of AudioSet lacks the clips gone from YouTube: its figures compare with others only with that said.
HUB_AUDIOSET = "agkphysics/AudioSet"
HUB_AUDIOSET_NOTE = (
    "The `test` split of `agkphysics/AudioSet` is AudioSet's evaluation set as that copy holds it: 17,142 of the "
    "20,371 clips of the original eval set (the others are gone from YouTube). Figures on it are not directly "
    "comparable with figures reported on the full eval set or on another copy; say so next to any comparison."
)


def read_template(name: str) -> str:
    """A card template of the project's `hub_cards/` folder, e.g. "model_card.md"."""
    return (project_folder("hub_cards") / name).read_text(encoding="utf-8")


def dataset_id(dataset: str) -> str:
    """What a card records as the dataset: a Hub id as it is, a local build by its folder's name (never a path).

    A local path would mean nothing on the Hub and would publish the trainer's directory layout.
    """
    if not os.path.exists(dataset):
        return dataset  # a Hub id, e.g. agkphysics/AudioSet
    path = Path(dataset).resolve()
    if path.is_file():  # one parquet file: name the build it belongs to
        path = path.parent.parent if path.parent.name == "data" else path.parent
    return path.name


def backbone_checkpoint(config) -> str:
    """The checkpoint the backbone started from, as recorded in the config; or that it was trained from scratch."""
    return config.pretrained_backbone or getattr(config.audio_config, "_name_or_path", "") or "trained from scratch"


def backbone_licence(config) -> str:
    """The licence of the backbone's pretrained weights: its release's, else its family's."""
    from ..conversion import FAMILY_LICENCES, RELEASES

    if not (config.pretrained_backbone or getattr(config.audio_config, "_name_or_path", "")):
        return "none (trained from scratch)"
    release = RELEASES.get(config.pretrained_backbone or "")
    return (release.licence if release else FAMILY_LICENCES.get(config.backbone)) or "see the checkpoint's source"


def results_note(dataset: str) -> str:
    """What a reader must know to compare the results table with published figures: a paragraph after the table,
    or nothing."""
    return f"\n\n{HUB_AUDIOSET_NOTE}" if dataset_id(dataset) == HUB_AUDIOSET else ""


def _results_table(results: dict[str, dict[str, float]]) -> str:
    if not results:
        return "Not evaluated yet."
    rows = ["| split | mAP | OmAP |", "|---|---:|---:|"]
    rows += [f"| {split} | {m['map']:.4f} | {m['omap']:.4f} |" for split, m in results.items()]
    return "\n".join(rows)


def objective_text(config) -> str:
    """The training objective in one line: the loss, L_SPA's form and terms, and what p_t was."""
    loss = "(L_BCE + L_OBCE)/2" if config.classification_loss == "obce" else "L_BCE"
    if config.spa_alpha <= 0:
        return f"{loss} (baseline, no SPA)"
    terms = ["L_SPA"]
    terms += [f"{w:g} · {name}" for name, w in (("L_unif", config.spa_uniformity_weight),
                                                 ("L_geo", config.spa_geometry_weight)) if w > 0]  # fmt: skip
    spa = terms[0] if len(terms) == 1 else f"({' + '.join(terms)})"
    form = (
        f"the clip-vs-all-labels softmax cross-entropy, τ = {config.spa_temperature:g}"
        if config.spa_objective == "contrastive"
        else "the paper's Eq. 4, 1 − mean cos(E_a, E_t) over the clip's labels"
    )
    text = "centred T̂ (label mean stored in the checkpoint), " if config.center_label_text else ""
    bias = "without bias" if config.center_label_text else "with bias"
    projection = "frozen at its initialisation" if config.freeze_text_projection else "learned"
    return f"{loss} + {config.spa_alpha:g} · {spa}; L_SPA is {form}; {text}p_t {projection}, {bias}"


def _figure(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"  # NaN != NaN


def _diagnostics_section(results: dict[str, dict], history: list[dict] | None) -> str:
    """The card's label-space section: the collapse diagnostics at the final weights, and per epoch."""
    from ..analysis.diagnostics import AUDIO_KEYS, LABEL_KEYS

    splits = {split: r for split, r in results.items() if all(k in r for k in LABEL_KEYS + AUDIO_KEYS)}
    if not splits:
        return "Not computed (see `python -m modeling_spa.analysis.diagnostics`)."
    first = next(iter(splits.values()))
    lines = [
        "E_t = p_t(T̂) are the label embeddings L_SPA aligns to. A mean pairwise cosine of E_t near 1 means the label "
        "space has collapsed to one direction and the SPA head no longer carries the label texts' semantics "
        "(`modeling_spa.analysis.diagnostics` defines every figure and recomputes them from this checkpoint).",
        "",
        f"T̂ (the text encoder's label embeddings): mean pairwise cosine {_figure(first['text_cos_mean'])} (min "
        f"{_figure(first['text_cos_min'])}), Spearman correlation of cosine distance with ontology distance "
        f"{_figure(first['text_ontology_spearman'])}. E_t: mean pairwise cosine {_figure(first['label_cos_mean'])} "
        f"(min {_figure(first['label_cos_min'])}), Spearman {_figure(first['label_ontology_spearman'])}.",
        "",
        "| split | cos(E_a, positive E_t) | cos(E_a, negative E_t) | margin | AUC |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {split} | " + " | ".join(_figure(r[k]) for k in AUDIO_KEYS) + " |" for split, r in splits.items()]
    epochs = [e for e in history or [] if "eval_label_cos_mean" in e]
    if epochs:
        lines += [
            "",
            "Per epoch (evaluation split):",
            "",
            "| epoch | train L_SPA | E_t mean cos | E_t min cos | E_t Spearman | margin | AUC | mAP | OmAP |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        keys = ("train_spa_loss", "eval_label_cos_mean", "eval_label_cos_min", "eval_label_ontology_spearman",
                "eval_audio_cos_margin", "eval_audio_label_auc", "eval_map", "eval_omap")  # fmt: skip
        lines += [f"| {e['epoch']} | " + " | ".join(_figure(e.get(k)) for k in keys) + " |" for e in epochs]
    return "\n".join(lines)


def render_model_card(
    config,
    repo_id: str,
    results: dict[str, dict[str, float]] | None = None,
    dataset: str = "AudioSet",
    training: str = "",
    license: str = "apache-2.0",
    template: str | Path | None = None,
    history: list[dict] | None = None,
) -> str:
    """The model card text. `results` maps a split name to at least {"map": ..., "omap": ...}, plus the collapse
    diagnostics (`modeling_spa.analysis.diagnostics`) where computed; `history`, the training epochs' summaries, adds
    them per epoch."""
    results = results or {}
    dataset = dataset_id(dataset)
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=["audio-classification", "audioset", "spa", "omap"],
        metrics=["map", "omap"],
        eval_results=[
            EvalResult(
                task_type="audio-classification",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split,
                metric_type=key,
                metric_name=name,
                metric_value=round(float(values[key]), 6),
            )
            for split, values in results.items()
            for key, name in METRICS
        ]
        or None,
    )
    frontend = config.frontend
    names = config.label_names
    text = Path(template).read_text(encoding="utf-8") if template else read_template("model_card.md")
    results_table, diagnostics = _results_table(results), _diagnostics_section(results, history)
    if "$diagnostics" not in text:  # a template older than the section (a user's own, an installed copy): append it
        results_table += f"\n\n### Label space\n{diagnostics}"
    return Template(text).substitute(
        card_data=card_data.to_yaml(),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        backbone=config.backbone,
        pretrained_backbone=backbone_checkpoint(config),
        backbone_licence=backbone_licence(config),
        frontend=describe_frontend(frontend),
        num_labels=config.num_labels,
        label_examples=", ".join(names[:3]),
        description_style=config.description_style,
        text_encoder=config.label_text_encoder,
        text_pooling=config.label_text_pooling,
        objective=objective_text(config),
        augmentation=AugmentationConfig.from_dict(getattr(config, "augmentation", None)).describe(),
        dataset=dataset,
        results_table=results_table,
        results_note=results_note(dataset),
        diagnostics=diagnostics,
        sampling_rate=frontend["sampling_rate"],
        training=training or "See the training arguments saved with the checkpoint.",
        license=license,
    )
