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

METRICS = (("accuracy", "accuracy"), ("map", "mAP"), ("omap", "OmAP"))  # those a result has (accuracy: single-label)
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
    shown = [(key, name) for key, name in METRICS if any(m.get(key) is not None for m in results.values())]
    rows = ["| split | " + " | ".join(name for _, name in shown) + " |", "|---|" + "---:|" * len(shown)]
    rows += [f"| {split} | " + " | ".join(_figure(m.get(key), 4) for key, _ in shown) + " |"
             for split, m in results.items()]  # fmt: skip
    notes = {m["omap_note"] for m in results.values() if m.get("omap_note")}
    return "\n".join(rows) + "".join(f"\n\n{note}" for note in sorted(notes))


def _taxonomy_text(config) -> str:
    """Which taxonomy the classes come from, as a table cell."""
    record = config.taxonomy
    if record is None:
        return "the AudioSet ontology" if config.label_mids else "not recorded"
    hierarchy = "a hierarchy" if record.get("hierarchy", True) else "a flat label list (no hierarchy: no OmAP)"
    source = f", from `{record['source']}`" if record.get("source") else ""
    return f"{record.get('name')} ({record.get('nodes')} nodes, {hierarchy}{source})"


LABEL_TEXTS_SHOWN = 40  # the card lists every label text up to this many classes


def _label_texts(config) -> str:
    """The label texts the text encoder embedded, class by class (all of them in `config.label_texts`)."""
    texts = config.label_texts
    if not texts:
        return "Not recorded (a checkpoint saved before label texts were; see `label_paths` in config.json)."
    rows = ["| class | label text |", "|---|---|"]
    names = config.label_names
    rows += [f"| {names[i]} | {texts[i]} |" for i in range(min(len(texts), LABEL_TEXTS_SHOWN))]
    more = len(texts) - LABEL_TEXTS_SHOWN
    rest = f"\n\n... and {more} more: `label_texts` in config.json lists them all." if more > 0 else ""
    return "\n".join(rows) + rest


def objective_text(config) -> str:
    """The training objective in one line: the loss, L_SPA's form and terms, and what p_t was."""
    loss = "(L_BCE + L_OBCE)/2" if config.classification_loss == "obce" else "L_BCE"
    if getattr(config, "single_label", False):
        loss = "L_CE (softmax cross-entropy, one class per clip)"
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


def _figure(value, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"  # NaN != NaN


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


THRESHOLDS_HEADING = "## Decision thresholds"


def thresholds_section(config) -> str:
    """The card's section on the per-class decision thresholds (`config.thresholds`): how they were calibrated, their
    range, the F1 they gave, and every class's threshold in a folded table."""
    thresholds = getattr(config, "thresholds", None)
    if thresholds is None:
        return (
            "Not calibrated: tools need a threshold (`spa-tag --threshold 0.5`). Calibrate per-class thresholds with "
            "`recipes/evaluate.py --split validation --calibrate --write_thresholds`."
        )
    info = getattr(config, "threshold_calibration", None) or {}
    where = " ".join(str(info[k]) for k in ("dataset", "split") if info.get(k)) or "a labelled split"
    clips = f" ({info['n_clips']} clips)" if info.get("n_clips") else ""
    values = sorted(thresholds)
    method = info.get("method", "calibration")
    fallback = (
        f"; {info['n_fallback']} class(es) with fewer than {info['min_positives']} positive clips there keep "
        f"{info['fallback']:g}"
        if info.get("n_fallback")
        else ""
    )
    lines = [
        f"One threshold per class in `config.thresholds`, chosen on {where}{clips} by {method}{fallback}. Range "
        f"{values[0]:.3f}-{values[-1]:.3f}, median {values[len(values) // 2]:.3f}. `spa-tag --threshold auto`, the "
        "timelines (`--events`) and `modeling_spa.tagging.thresholds.pipeline_tags` use them; the model's scores do "
        "not depend on them.",
    ]
    f1 = info.get("f1") or {}
    if f1:
        lines += ["", "| thresholds | micro F1 | macro F1 |", "|---|---:|---:|"]
        lines += [f"| {name} | {v['micro_f1']:.4f} | {v['macro_f1']:.4f} |" for name, v in f1.items()]
        lines += ["", f"(on {info.get('f1_split', where)})"]
    rows = [f"| {config.id2label[i]} | {t:.3f} |" for i, t in enumerate(thresholds)]
    lines += ["", "<details><summary>Every class's threshold</summary>", "", "| class | threshold |", "|---|---:|"]
    return "\n".join(lines + rows + ["", "</details>"])


def update_thresholds_section(card: str, config) -> str:
    """`card` (a rendered model card) with its decision-thresholds section rewritten from `config`; a card without
    the section (rendered from an older template) gets it before "## Use", or at the end."""
    section = f"{THRESHOLDS_HEADING}\n{thresholds_section(config)}\n"
    if THRESHOLDS_HEADING in card:
        head, rest = card.split(THRESHOLDS_HEADING, 1)
        following = rest.find("\n## ")
        return head + section + (rest[following + 1 :] if following >= 0 else "")
    if "\n## Use" in card:
        head, rest = card.split("\n## Use", 1)
        return f"{head}\n{section}\n## Use{rest}"
    return f"{card.rstrip()}\n\n{section}"


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
        metrics=[key for key, _ in METRICS if any(r.get(key) is not None for r in results.values())] or ["map", "omap"],
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
            if values.get(key) is not None
        ]
        or None,
    )
    frontend = config.frontend
    names = config.label_names
    text = Path(template).read_text(encoding="utf-8") if template else read_template("model_card.md")
    results_table, diagnostics = _results_table(results), _diagnostics_section(results, history)
    if "$diagnostics" not in text:  # a template older than the section (a user's own, an installed copy): append it
        results_table += f"\n\n### Label space\n{diagnostics}"
    thresholds = thresholds_section(config)
    if "$thresholds" not in text:  # likewise for the decision thresholds
        results_table += f"\n\n{THRESHOLDS_HEADING}\n{thresholds}"
    if "$label_texts" not in text:  # likewise for the taxonomy and the label texts
        classes = f"Taxonomy: {_taxonomy_text(config)}.\n\n{_label_texts(config)}"
        results_table += f"\n\n### Classes and label texts\n{classes}"
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
        taxonomy=_taxonomy_text(config),
        score_function="softmax(-1)" if getattr(config, "single_label", False) else "sigmoid()",
        score_kind="single-label (softmax)" if getattr(config, "single_label", False) else "multi-label (sigmoid)",
        label_texts=_label_texts(config),
        text_encoder=config.label_text_encoder,
        text_pooling=config.label_text_pooling,
        objective=objective_text(config),
        augmentation=AugmentationConfig.from_dict(getattr(config, "augmentation", None)).describe(),
        dataset=dataset,
        results_table=results_table,
        results_note=results_note(dataset),
        diagnostics=diagnostics,
        thresholds=thresholds,
        sampling_rate=frontend["sampling_rate"],
        training=training or "See the training arguments saved with the checkpoint.",
        license=license,
    )
