"""Scoring a split with a model, gathered over processes, and its mAP / OmAP (and accuracy for a single-label model):
the per-epoch validation of `recipes/train.py` and the whole of `recipes/evaluate.py`.

Scores are sigmoid probabilities, or softmax ones for a single-label model (one class per clip). OmAP needs the
classes' distances: a model whose classes are a flat label list has none, and its results say so (`omap` None, with
`omap_note`) beside mAP.

The model scores whole clips in eval mode: those longer than its window window by window, aggregated as the model
aggregates (`modeling_spa.windowing`); with `audioset_head`, the backbone's original AudioSet head
(`audioset_scores`: the published checkpoint as it is) on the same windows. Under several processes every batch is
gathered with `gather_for_metrics` (which drops the duplicates a sharded sampler adds to even out the last batch),
bad clips and padding rows are dropped after the gather (their `valid` is False), and the metrics are computed on
every process from the same gathered arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import compute_omap


@dataclass
class SplitScores:
    """A split's scores (clips, classes), multi-hot labels, clip ids (when asked for), in the gathered order; the
    bad clips skipped and the labels left out as outside the model's classes, as (clip id, reason or mid) pairs
    (unique over processes); the audio embeddings E_a (clips, D) of the SPA head (None with the AudioSet head), for
    the label-space diagnostics."""

    scores: np.ndarray
    labels: np.ndarray
    clip_ids: list[str] | None = None
    audio_embeds: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unknown_labels: list[tuple[str, str]] = field(default_factory=list)


def check_audioset_head(model) -> None:
    """`audioset_scores` gives AudioSet's 527 classes in `class_labels_indices.csv` order: the model's classes (which
    order the labels) must be exactly those, or the scores would be compared with the wrong labels."""
    from ..taxonomy import AudioSetOntology

    if not hasattr(model.spa.backbone, "audioset_scores"):
        raise ValueError(f"The {model.config.backbone!r} backbone keeps no original AudioSet head (--audioset_head).")
    expected = AudioSetOntology.load().label_mids
    mids = list(model.config.label_mids or [])
    if mids != expected:
        where = (
            f"{len(mids)} classes"
            if len(mids) != len(expected)
            else f"class {next(i for i, (a, b) in enumerate(zip(mids, expected, strict=True)) if a != b)} differs"
        )
        raise ValueError(
            "--audioset_head scores AudioSet's 527 classes in class_labels_indices.csv order, but the model's "
            f"label_mids are not those ({where}): its labels would not line up with the head's outputs."
        )


NO_HIERARCHY_NOTE = (
    "OmAP needs a hierarchy: this model's classes are a flat label list, without graph distances between them. Give "
    "them a taxonomy file with parents to measure OmAP; mAP is reported."
)


def model_distances(model) -> np.ndarray | None:
    """The model's class distances (its `label_distances` buffer), or None when its classes are a flat label list."""
    if not model.config.has_hierarchy:
        return None
    return model.label_distances.detach().cpu().numpy()


def probabilities(config, logits: torch.Tensor) -> torch.Tensor:
    """Scores of logits: softmax over the classes for a single-label model, else a sigmoid per class."""
    return logits.float().softmax(dim=-1) if config.single_label else logits.float().sigmoid()


def clip_outputs(
    model, input_values: torch.Tensor, attention_mask: torch.Tensor, audioset_head: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(batch, classes) probabilities of whole clips, in eval mode, and their E_a (batch, D): the SPA classifier's
    (windowed by the model itself), or the original AudioSet head's on the same windows (which has no E_a: None)."""
    if not audioset_head:
        output = model(input_values=input_values, attention_mask=attention_mask)
        return probabilities(model.config, output.logits), output.audio_embeds.float()
    return model.audioset_scores(input_values, attention_mask).float(), None  # windowed by the model too


def clip_scores(model, input_values: torch.Tensor, attention_mask: torch.Tensor, audioset_head: bool) -> torch.Tensor:
    """The probabilities of `clip_outputs`."""
    return clip_outputs(model, input_values, attention_mask, audioset_head)[0]


def _unique(pairs: list) -> list[tuple[str, str]]:
    return sorted({(str(a), str(b)) for a, b in pairs})


@torch.no_grad()
def score_split(accelerator, model, loader, audioset_head: bool = False, with_ids: bool = False) -> SplitScores:
    """Score every clip of a prepared loader (the collator's batches) with `model` (unwrapped) in eval mode, in the
    run's mixed precision, and gather the results of all processes."""
    from accelerate.utils import gather_object

    was_training = model.training
    model.eval()
    scores, labels, embeds, ids, skipped, unknown = [], [], [], [], [], []
    for batch in tqdm(loader, desc="eval", disable=not accelerator.is_local_main_process, leave=False):
        skipped += batch["skipped"]
        unknown += batch.get("unknown_labels", [])
        with accelerator.autocast():
            probabilities, audio_embeds = clip_outputs(
                model, batch["input_values"], batch["attention_mask"], audioset_head
            )
        extra = () if audio_embeds is None else (audio_embeds,)  # E_a rides along: no second pass for diagnostics
        gathered = accelerator.gather_for_metrics((probabilities, batch["labels"], batch["valid"], *extra))
        batch_scores, batch_labels, valid, *batch_embeds = (t.cpu().numpy() for t in gathered)
        scores.append(batch_scores[valid])  # placeholders of bad clips and padding rows are dropped after the gather
        labels.append(batch_labels[valid])
        embeds += [e[valid] for e in batch_embeds]
        if with_ids:
            batch_ids = accelerator.gather_for_metrics(batch["clip_ids"], use_gather_object=True)
            ids += [clip for clip, keep in zip(batch_ids, valid, strict=True) if keep]
    model.train(was_training)
    num_classes = len(model.config.label_mids or []) or model.config.num_labels
    classes = 527 if audioset_head else num_classes
    return SplitScores(
        scores=np.concatenate(scores) if scores else np.zeros((0, classes), np.float32),
        labels=np.concatenate(labels).round() if labels else np.zeros((0, num_classes), np.float32),
        clip_ids=ids if with_ids else None,
        audio_embeds=np.concatenate(embeds) if embeds else None,
        skipped=_unique(gather_object(skipped)),  # unique: DDP repeats clips to even out batches
        unknown_labels=_unique(gather_object(unknown)),
    )


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over the clips with exactly one label: the highest score is that label."""
    single = labels.sum(axis=1) == 1
    if not single.any():
        raise ValueError("Accuracy needs clips with exactly one label; none has.")
    return float((scores[single].argmax(axis=1) == labels[single].argmax(axis=1)).mean())


def split_metrics(split: SplitScores, distances: np.ndarray | None, model=None) -> dict:
    """mAP, OmAP, OmAP_λ (and the raw per-class results under "_result") of gathered scores; accuracy for a
    single-label `model`; with the `model` and the split's E_a, the label-space collapse diagnostics
    (`modeling_spa.analysis.diagnostics`). `distances` None (a flat label list): no OmAP, and a note saying why."""
    from ..analysis.diagnostics import collapse_diagnostics

    if len(split.scores) == 0:
        raise ValueError("No clip could be scored: every clip of the split was skipped (see the skipped clips).")
    flat = distances is None
    if flat:  # mAP does not depend on the distances: any valid matrix gives it (OmAP is then dropped)
        classes = split.labels.shape[1]
        distances = np.ones((classes, classes), dtype=np.int64) - np.eye(classes, dtype=np.int64)
    result = compute_omap(split.labels, split.scores, distances)
    diagnostics = {}
    if model is not None and split.audio_embeds is not None:
        embeds, labels = torch.from_numpy(split.audio_embeds), torch.from_numpy(split.labels)
        diagnostics = collapse_diagnostics(model, embeds, labels)
    single = model is not None and model.config.single_label
    return {
        "map": result["map"],
        "omap": None if flat else result["omap"],
        "omap_per_lambda": None if flat else result["omap_per_lambda"].tolist(),
        **({"omap_note": NO_HIERARCHY_NOTE} if flat else {}),
        **({"accuracy": accuracy(split.scores, split.labels)} if single else {}),
        "n_classes_evaluated": result["n_classes_evaluated"],
        "skipped_clips": len({clip for clip, _ in split.skipped}),
        **diagnostics,
        "_result": result,
    }


def evaluate(accelerator, model, loader, distances: np.ndarray | None) -> dict:
    """mAP, OmAP and OmAP_λ over the whole split, with the label-space collapse diagnostics, as `recipes/train.py`
    records them every epoch.

    `model` is unwrapped (no DDP, not compiled: evaluation batches hold whole clips of any length). Augmentation is
    off: the model is in eval mode.
    """
    metrics = split_metrics(score_split(accelerator, model, loader), distances, model)
    metrics.pop("_result")
    return metrics


__all__ = ["NO_HIERARCHY_NOTE", "SplitScores", "accuracy", "check_audioset_head", "clip_outputs", "clip_scores",
           "evaluate", "model_distances", "probabilities", "score_split", "split_metrics"]  # fmt: skip
