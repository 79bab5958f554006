"""SPA model configuration."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging

from .augmentation import AugmentationConfig
from .backbones import BACKBONES, backbone_spec
from .frontend import frontend_preset
from .label_text import DEFAULT_PROMPT, DESCRIPTION_STYLES
from .windowing import window_settings

CLASSIFICATION_LOSSES = ("obce", "bce")
SINGLE_LABEL, MULTI_LABEL = "single_label_classification", "multi_label_classification"
PROBLEM_TYPES = (MULTI_LABEL, SINGLE_LABEL)
SPA_OBJECTIVES = ("paper", "contrastive")

logger = logging.get_logger(__name__)


class SPAConfig(PreTrainedConfig):
    r"""Configuration of [`SPAForAudioClassification`]: front-end, audio backbone, projections, label text and loss.

    The defaults are the paper's setting (Liu & Ren, ICASSP 2024): the PaSST-S backbone with PaSST's front-end
    (32 kHz, 128 mel bins, window 800, hop 320, 1000 frames), `concat` label descriptions encoded by BERT base,
    α = 0.3 and (L_BCE + L_OBCE)/2. `backbone="demo_cnn"` is the small CNN of the offline demo, trained from
    scratch; it is no backbone of the paper.

    Args:
        backbone (`str`): registered backbone name (`modeling_spa.backbones.BACKBONES`), e.g. `"ast"`, `"demo_cnn"`,
            `"hub"` (transformers' speech encoders: wav2vec2, HuBERT, WavLM, Whisper's encoder, ...).
        audio_config (`PreTrainedConfig` or `dict`): the backbone's own configuration (e.g. an `ASTConfig`; for
            `"hub"` the family's, e.g. a `WavLMConfig`, or a dict with its `model_type`).
        frontend (`dict` or `str`): front-end settings, or a preset's name (see
            `modeling_spa.frontend.FRONTEND_PRESETS`; the kinds in `modeling_spa.frontends`); defaults to the
            backbone's preset.
        projection_dim (`int`): D, the shared audio/text embedding size of p_a and p_t.
        text_hidden_size (`int`): V, the size of the cached label-text embeddings.
        label_mids (`list[str]`): ids of the C classes in their taxonomy, in output order (AudioSet mids for the
            AudioSet ontology); `id2label` holds their names.
        label_paths (`list[str]`): each class's ontology path ("Human sounds > ... > Male speech"), for display.
        label_texts (`list[str]`, *optional*): the label descriptions the text encoder embedded (one per class, in
            `description_style`), recorded for the model card and for re-heading.
        taxonomy (`dict`, *optional*): the taxonomy the classes come from: `name`, `source` (a file name, or
            "ontology.json" for AudioSet), `nodes` and `hierarchy` (False for a flat label list, whose classes have no
            distances: OBCE and OmAP need a hierarchy). None: not recorded (AudioSet, for configs saved before).
        label_text_encoder, label_text_encoder_revision, label_text_pooling: the frozen text encoder that produced
            the label-text embeddings, recorded for provenance (it is not part of the model). Not named
            `text_encoder`: `PreTrainedConfig.get_text_config()` reads that attribute as a text sub-config.
        description_style (`str`): `direct`, `prompt`, `desc` or `concat` (paper section 3.1).
        prompt_template (`str`): template of the `prompt` style.
        spa_alpha (`float`): α, the weight of L_SPA; 0 gives the baseline. The default 0.3 was chosen on the demo's
            validation split between 0.1 and 0.3; in a shorter pilot run α = 1.0 drove L_SPA close to 0 and lowered
            both mAP and OmAP.
        classification_loss (`str`): `obce` for (L_BCE + L_OBCE)/2 as in the paper, `bce` for plain BCE. Multi-label
            only: with `problem_type="single_label_classification"` (one class per clip, e.g. ESC-50) the loss is
            softmax cross-entropy (`losses.single_label_loss`); the hierarchy then enters through the label texts
            (L_SPA) and the evaluation (OmAP), not through the classification loss, since OBCE weighs the negatives
            of independent sigmoids, which a softmax does not have.
        spa_objective (`str`): the alignment term L_SPA (`modeling_spa.losses`). `paper` (the default): the paper's
            Eq. 4, 1 - mean cos(E_a, E_t) over the clip's labels. `contrastive`: cross-entropy of softmax(S / τ) over
            all C labels (S the clip's cosines to every E_t, τ = `spa_temperature`) against the clip's labels
            normalised to sum 1. Eq. 4 only pulls E_a towards its labels' E_t, and with a learnable p_t the cheapest
            way to do that is to map every label to nearly one direction (the label space collapses: see
            `modeling_spa.analysis.diagnostics`); the softmax also pushes E_a away from the other labels, so a collapsed
            label space is its worst solution (loss log C), not its best.
        spa_temperature (`float`): τ of the `contrastive` objective (default 0.1).
        spa_uniformity_weight (`float`): weight, inside α, of the uniformity of the label embeddings (Wang & Isola
            2020): log mean over label pairs of exp(-2 |ê_c - ê_c'|²), ê = E_t / |E_t|, which falls as the labels
            spread over the sphere and is largest (0) when they coincide. 0 (the default) leaves it out.
        spa_geometry_weight (`float`): weight, inside α, of the mean squared difference between the pairwise cosines
            of E_t and those of the label text that p_t sees (T̂, centred with `center_label_text`): p_t may rotate
            and rescale the label space but must keep the text encoder's neighbourhoods, so it cannot collapse it
            without paying for every pair. 1.0 is the default: `recipes/spa_study.py` chose it by mean validation
            OmAP on the real-recording task over the paper's Eq. 4 alone and the other options (5 seeds; no option
            differs significantly from the baseline on OmAP, but Eq. 4 alone collapses the label space in every seed
            and this term keeps its ontology correlation highest). 0 gives the paper's exact Eq. 4.
        freeze_text_projection (`bool`): keep p_t at its initialisation (a random linear map, which approximately
            keeps the text embeddings' angles): no gradient, no optimizer state, no collapse, since E_t is fixed and
            only E_a moves. Default False (the paper trains p_t).
        center_label_text (`bool`): subtract the mean of T̂ over the labels before p_t, and build p_t without bias.
            The mean is a persistent buffer (`label_text_mean`, set when the label text is, saved in the
            checkpoint), so the map does not change if the labels do. Text encoders' embeddings share a large common
            component (MiniLM on the 527 `concat` descriptions: mean pairwise cosine 0.34) and a bias can carry every
            label to one point; centred and without bias, the label embeddings sum to zero and cannot all point one
            way. Default False (the paper's p_t is a linear layer with bias on T̂).

        The loss is L = (L_BCE + L_OBCE)/2 + α · (L_SPA + spa_uniformity_weight · L_unif + spa_geometry_weight ·
        L_geo). The defaults are the paper's Eq. 4 with a learnable p_t with bias, plus L_geo (weight 1);
        `spa_geometry_weight=0` is the paper's objective exactly.
        pretrained_backbone (`str`, *optional*): the checkpoint the backbone was initialised from (a release's short
            name, a file name or a Hub id), recorded for provenance and model cards.
        window_length_s (`float`, *optional*): at inference, clips longer than this are scored window by window
            (`modeling_spa.windowing`; `spa-tag` uses the same windows). None derives it: for a front-end with a
            fixed `max_frames` the longest clip those frames hold (AST: 10.255 s), otherwise 10 s;
            `recipes/train.py` sets it to the training clip length for backbones that take any length. It may not
            exceed the span of a fixed `max_frames`.
        window_hop_s (`float`, *optional*): the hop between windows, at most the window length; None is the window
            length (no overlap: every sample is scored once, except where the final window, aligned to the end of
            the clip, overlaps the one before).
        window_aggregation (`str`): `mean` (the default: the mean of the windows' sigmoid scores, weighted by the
            real samples of each window) or `max`.
        augmentation (`dict`, *optional*): what the model does to a batch in training mode only: random gain, time
            shift, mixup (the loss then sees mixed labels) and SpecAugment, as fields of
            `modeling_spa.augmentation.AugmentationConfig` (stored with all of them; None: nothing). Recorded so that
            a checkpoint says how it was trained (`recipes/train.py` sets it from its arguments); evaluation
            (`model.eval()`) never augments.
        thresholds (`list[float]`, *optional*): one decision threshold per class, in [0, 1], for turning scores into
            tags and events (`spa-tag --threshold auto`, `modeling_spa.tagging.thresholds`); calibrated on a
            labelled split by `recipes/evaluate.py --calibrate --write_thresholds`. None: not calibrated (the tools
            then need a number). The model's outputs do not depend on it: logits stay logits.
        threshold_calibration (`dict`, *optional*): how `thresholds` were obtained (method, dataset, split, the
            fallback for classes with too few positives, F1 there), for the model card.

    Classes: `num_labels` is `len(id2label)`, as everywhere in transformers; `label_mids` say which classes of their
    taxonomy they are, and `label_paths` and `label_texts` describe them; each is either None or one per class. To
    fine-tune on other classes, `modeling_spa.conversion.rehead(model, taxonomy, classes)` re-heads with SPA kept: the
    new classes' label texts (this config's text encoder, pooling, style and centring) and distances fill the buffers.
    transformers' own re-heading, `from_pretrained(path, num_labels=N, id2label=..., ignore_mismatched_sizes=True)` or
    `config.num_labels = N`, knows no taxonomy: it sets `label_mids`, `label_paths`, `label_texts` and `taxonomy` to
    None, and the model's `label_text_embeds` (N, V) and `label_distances` (N, N) buffers, which no longer match the
    checkpoint's, are re-initialised to zeros, the "not built" state of a model made from a config alone; such a
    model still predicts, and trains with `classification_loss="bce"` and `spa_alpha=0`. Re-heading to the same
    number of classes that way is a renaming: the per-class fields and the buffers stay the checkpoint's.
    `thresholds` (and their `threshold_calibration`) follow the same rule: another number of classes drops them.
    """

    model_type = "spa"
    sub_configs_defaults = {"audio_config": SubConfigSpec(config_class=AutoConfig, model_type="spa_passt")}
    # Trainer.predict keeps the outputs not named here: the logits alone, not the embeddings and loss parts.
    keys_to_ignore_at_inference = ["audio_embeds", "bce_loss", "obce_loss", "ce_loss", "spa_loss",
                                   "spa_uniformity_loss", "spa_geometry_loss", "hidden_states",
                                   "attentions"]  # fmt: skip

    backbone: str = "passt"
    audio_config: PreTrainedConfig | dict | None = None
    frontend: dict | None = None
    projection_dim: int = 512
    text_hidden_size: int = 768
    label_mids: list[str] | None = None
    label_paths: list[str] | None = None
    label_texts: list[str] | None = None
    taxonomy: dict | None = None
    label_text_encoder: str = "google-bert/bert-base-uncased"
    label_text_encoder_revision: str | None = None
    label_text_pooling: str = "mean"
    description_style: str = "concat"
    prompt_template: str = DEFAULT_PROMPT
    spa_alpha: float = 0.3
    classification_loss: str = "obce"
    spa_objective: str = "paper"
    spa_temperature: float = 0.1
    spa_uniformity_weight: float = 0.0
    spa_geometry_weight: float = 1.0
    freeze_text_projection: bool = False
    center_label_text: bool = False
    pretrained_backbone: str | None = None
    window_length_s: float | None = None
    window_hop_s: float | None = None
    window_aggregation: str = "mean"
    augmentation: dict | None = None
    thresholds: list[float] | None = None
    threshold_calibration: dict | None = None

    def __post_init__(self, **kwargs):
        for old in ("text_encoder", "text_encoder_revision", "text_pooling"):  # configs saved before the rename
            if old in kwargs:
                setattr(self, f"label_{old}", kwargs.pop(old))
        if self.backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {self.backbone!r}; registered: {sorted(BACKBONES)}.")
        if self.description_style not in DESCRIPTION_STYLES:
            raise ValueError(f"Unknown description_style {self.description_style!r}; use one of {DESCRIPTION_STYLES}.")
        if self.classification_loss not in CLASSIFICATION_LOSSES:
            raise ValueError(
                f"classification_loss must be one of {CLASSIFICATION_LOSSES}, got {self.classification_loss!r}."
            )
        check_spa_objective(self)
        self.audio_config = backbone_spec(self.backbone).make_config(self.audio_config)
        spec = backbone_spec(self.backbone)
        default_frontend = self.frontend is None
        if default_frontend:
            self.frontend = spec.frontend_settings(self.audio_config)
        elif isinstance(self.frontend, str):  # a preset's name, as recipes' YAML configs give it
            self.frontend = frontend_preset(self.frontend)
        label_names = kwargs.pop("label_names", None)
        if self.label_mids is not None:  # saved together, so only a caller's mistake makes them differ
            check_thresholds(self.thresholds, len(self.label_mids))
        if self.label_paths is not None:
            self.label_paths = list(self.label_paths)
        if self.label_texts is not None:
            self.label_texts = list(self.label_texts)
        if self.label_mids is not None:
            self.label_mids = list(self.label_mids)
            names = list(label_names) if label_names is not None else list(self.label_mids)
            if len(names) != len(self.label_mids):
                raise ValueError(f"{len(self.label_mids)} label_mids but {len(names)} label_names.")
            if self.label_paths is not None and len(self.label_paths) != len(self.label_mids):
                raise ValueError(f"{len(self.label_mids)} label_mids but {len(self.label_paths)} label_paths.")
            if self.id2label is None and kwargs.get("num_labels") in (None, len(names)):
                self.id2label = dict(enumerate(names))
                self.label2id = {name: i for i, name in enumerate(names)}
        # An id2label of another length (a re-headed checkpoint) wins over the mids: it is what the weights have. A
        # `num_labels` argument is applied by the base class, through the `id2label` hook in `__setattr__`.
        self._forget_other_classes()
        super().__post_init__(**kwargs)
        if self.problem_type is None:
            self.problem_type = MULTI_LABEL
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {self.problem_type!r}.")
        if default_frontend and spec.max_frames(self.audio_config) is not None:
            self.frontend["max_frames"] = spec.max_frames(self.audio_config)  # fixed-size backbones (AST, PaSST)
        spec.check(self.audio_config, self.frontend)
        check_thresholds(self.thresholds, self.num_labels)
        window_settings(self)  # a bad window, hop or aggregation fails here, not at the first long clip

    def __setattr__(self, key, value):
        if key == "augmentation" and value is not None:  # validated, every field written out, whenever it is set
            value = AugmentationConfig.from_dict(value).to_dict()
        if key == "thresholds" and value is not None:  # plain floats, so config.json stays JSON
            value = [float(v) for v in value]
            # Set again after construction (the dataclass sets each field once first): one per class, now.
            known = "thresholds" in self.__dict__ and getattr(self, "id2label", None)
            check_thresholds(value, len(self.id2label) if known else None)
        super().__setattr__(key, value)
        if key == "id2label":  # also what `config.num_labels = N` sets
            self._forget_other_classes()

    def _forget_other_classes(self) -> None:
        """Drop `label_mids`, `label_paths`, `label_texts` and `taxonomy` when the classes no longer count as many (see
        the class docstring)."""
        # During __init__ the fields are set one by one: label_mids may still be the class default.
        per_class = [getattr(self, name, None) for name in ("label_mids", "label_paths", "label_texts", "thresholds")]
        if self.id2label is None or all(v is None or len(v) == len(self.id2label) for v in per_class):
            return
        logger.info(
            f"{len(self.id2label)} classes where label_mids/label_paths/label_texts/thresholds name "
            f"{len(next(filter(None, per_class)))}: they are dropped; re-head with label text and distances for the "
            "new classes with modeling_spa.conversion.rehead (or from_backbone), and calibrate new thresholds."
        )
        self.label_mids = self.label_paths = self.label_texts = self.taxonomy = None
        self.thresholds = self.threshold_calibration = None

    @property
    def label_names(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def single_label(self) -> bool:
        """One class per clip: softmax cross-entropy in training, softmax scores and accuracy in evaluation."""
        return self.problem_type == SINGLE_LABEL

    @property
    def has_hierarchy(self) -> bool:
        """Whether the classes have graph distances: False only for a recorded flat label list."""
        return (self.taxonomy or {}).get("hierarchy", True)


def check_thresholds(thresholds: list[float] | None, num_labels: int | None) -> None:
    """Raise unless `thresholds` is None or one number in [0, 1] per class."""
    if thresholds is None:
        return
    if num_labels is not None and len(thresholds) != num_labels:
        raise ValueError(f"thresholds holds {len(thresholds)} values for {num_labels} classes: give one per class.")
    bad = [t for t in thresholds if not 0 <= t <= 1]  # NaN fails too
    if bad:
        raise ValueError(f"thresholds must be in [0, 1], got {bad[:3]}.")


def check_spa_objective(config: SPAConfig) -> None:
    """Raise on an unknown `spa_objective`, a temperature that is not positive or a negative weight."""
    if config.spa_objective not in SPA_OBJECTIVES:
        raise ValueError(f"spa_objective must be one of {SPA_OBJECTIVES}, got {config.spa_objective!r}.")
    if not config.spa_temperature > 0:
        raise ValueError(f"spa_temperature must be positive, got {config.spa_temperature}.")
    for name in ("spa_uniformity_weight", "spa_geometry_weight"):
        if not getattr(config, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}.")
