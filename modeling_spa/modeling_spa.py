"""SPA models: waveform -> in-model log-mel -> audio backbone -> p_a -> E_a -> classifier, with L_SPA aligning E_a to
the projected label-text embeddings (Liu & Ren, ICASSP 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, can_return_tuple

from .augmentation import (
    augment_waveform,
    draw_mixup,
    mix,
    mix_mask,
    mixup_enabled,
    spec_augment,
    training_augmentation,
)
from .backbones import backbone_spec
from .configuration_spa import SPAConfig
from .frontend import LogMelFrontend
from .frontends import build_frontend
from .losses import (
    label_geometry_loss,
    label_geometry_target,
    label_similarity,
    label_uniformity_loss,
    obce_loss,
    single_label_loss,
    spa_alignment_loss,
    spa_contrastive_loss,
)
from .windowing import aggregate_embeds, forward_in_windows, in_windows, probabilities_in_windows, window_settings


@dataclass
class SPAModelOutput(ModelOutput):
    """Output of [`SPAModel`].

    Args:
        audio_embeds (`(batch, projection_dim)`): E_a = p_a(f_a(X)).
        pooled_output (`(batch, backbone pooled size)`): the backbone's pooled embedding f_a(X).
        hidden_states (`tuple[torch.FloatTensor]`, with `output_hidden_states=True`): the backbone's, e.g. AST's
            token sequences after the embeddings and each layer, the demo CNN's feature maps (see its module).
        attentions (`tuple[torch.FloatTensor]`, with `output_attentions=True`): the backbone's attention weights,
            one per layer (AST, with `attn_implementation="eager"`); None for a backbone without attention.
    """

    audio_embeds: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SPAOutput(ModelOutput):
    """Output of [`SPAForAudioClassification`].

    Args:
        loss: the training loss, classification loss + α · (L_SPA + the label-space terms) (when `labels` are given).
        logits (`(batch, num_labels)`): logits; apply a sigmoid for multi-label scores, a softmax for a single-label
            model (`config.problem_type == "single_label_classification"`).
        audio_embeds (`(batch, projection_dim)`): E_a.
        bce_loss, obce_loss, spa_loss: the parts, for logging: plain BCE, the ontology-weighted BCE, and L_SPA in the
            configured form (`config.spa_objective`; only computed when α > 0). A single-label model has `ce_loss`,
            the softmax cross-entropy, instead of the two BCE parts.
        spa_uniformity_loss, spa_geometry_loss: the label-space terms, unweighted, when α > 0 and their weight is
            (`config.spa_uniformity_weight`, `config.spa_geometry_weight`).
        hidden_states, attentions: the backbone's, as in [`SPAModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    bce_loss: torch.FloatTensor | None = None
    obce_loss: torch.FloatTensor | None = None
    ce_loss: torch.FloatTensor | None = None
    spa_loss: torch.FloatTensor | None = None
    spa_uniformity_loss: torch.FloatTensor | None = None
    spa_geometry_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class SPAPreTrainedModel(PreTrainedModel):
    config_class = SPAConfig
    base_model_prefix = "spa"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = True  # every backbone checkpoints its blocks (GradientCheckpointingLayer)
    # The attention, if any, is the backbone's: AST (an `ASTModel`) checks and runs sdpa, flash and flex attention
    # itself, following the `audio_config` that the SPA config passes the implementation on to; the demo CNN has none.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    # post_init adds the backbone module's own (AST: its embeddings and layers).
    _no_split_modules = []

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            # Variance-preserving (std 1/sqrt(fan_in)): the fixed 0.02 of transformer layers starves the small
            # stacked heads (p_a then c_a) of signal. Backbones that are PreTrainedModels keep their own init.
            init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, LogMelFrontend):
            module.reset_buffers()
        elif isinstance(module, SPAForAudioClassification):
            # The label text and distances come from a builder or a checkpoint, never from initialisation.
            init.zeros_(module.label_text_embeds)
            init.zeros_(module.label_distances)
            if module.config.center_label_text:
                init.zeros_(module.label_text_mean)
        else:
            # Norms, their running statistics included (a model made on the meta device, or loaded without them,
            # would otherwise normalise with uninitialised memory), and whatever else transformers knows.
            super()._init_weights(module)


def needs_windows(model: SPAPreTrainedModel, input_values: torch.Tensor) -> bool:
    """Whether `model` must window `input_values`: in eval mode, clips longer than the window (`window_settings`).

    Training never windows (the data collator crops; a fixed-length front-end crops the last frames of a longer crop).
    """
    return not model.training and input_values.shape[-1] > window_settings(model.config).length


def refuse_per_window_outputs(output_hidden_states: bool, output_attentions: bool) -> None:
    """Hidden states and attentions belong to one window: a windowed clip has no single set to return."""
    if output_hidden_states or output_attentions:
        raise ValueError(
            "Hidden states and attentions are per window, and this clip is longer than the model's window "
            "(config.window_length_s), so the model scores it window by window. Cut it into windows yourself "
            "(modeling_spa.windowing.window_starts gives the model's positions) and pass them as a batch."
        )


class SPAModel(SPAPreTrainedModel):
    """Waveform -> front-end (log-mel, or what a speech encoder takes) -> backbone -> E_a. Use it for audio embeddings
    in the shared audio-text space."""

    def __init__(self, config: SPAConfig):
        super().__init__(config)
        spec = backbone_spec(config.backbone)
        self.frontend = build_frontend(config.frontend)
        self.backbone = spec.build(config.audio_config)
        self.audio_projection = nn.Linear(spec.pooled_size(config.audio_config), config.projection_dim)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        mixup_index: torch.LongTensor | None = None,
        mixup_lambda: torch.FloatTensor | None = None,
        **kwargs,
    ) -> SPAModelOutput:
        """`input_values` (batch, samples) at the front-end rate; `attention_mask` marks real samples.

        `output_attentions` / `output_hidden_states` default to the config's; `return_dict=False` (or
        `config.return_dict = False`) returns a tuple of the outputs that are not None.

        In training mode, `config.augmentation` applies (`modeling_spa.augmentation`): gain and time shift on the
        waveform, SpecAugment on the log-mel. `mixup_index` (batch,) and `mixup_lambda` (batch,) mix clip i with clip
        `mixup_index[i]` at weight `mixup_lambda[i]`, in the domain `config.augmentation["mixup_domain"]` (default
        log-mel); `SPAForAudioClassification` draws them and mixes the labels alike.
        """
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if needs_windows(self, input_values):
            refuse_per_window_outputs(output_hidden_states, output_attentions)
            return self._forward_windows(input_values, attention_mask)
        augmentation = training_augmentation(self.config.augmentation, self.training)
        if augmentation is not None:
            sampling_rate = self.config.frontend["sampling_rate"]
            input_values = augment_waveform(input_values, attention_mask, augmentation, sampling_rate)
        mixup_domain = (self.config.augmentation or {}).get("mixup_domain", "logmel")
        if mixup_index is not None and mixup_domain == "waveform":
            input_values = mix(input_values, mixup_index, mixup_lambda)
            attention_mask = None if attention_mask is None else mix_mask(attention_mask, mixup_index, mixup_lambda)
        features, frame_mask = self.frontend(input_values, attention_mask)
        if mixup_index is not None and mixup_domain == "logmel":
            features = mix(features, mixup_index, mixup_lambda)
            frame_mask = mix_mask(frame_mask, mixup_index, mixup_lambda)
        if augmentation is not None:
            features = spec_augment(features, augmentation)
        backbone = self.backbone(
            features.to(self.audio_projection.weight.dtype),
            frame_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        pooled = backbone.pooler_output
        return SPAModelOutput(
            audio_embeds=self.audio_projection(pooled),
            pooled_output=pooled,
            hidden_states=backbone.hidden_states,
            attentions=backbone.attentions,
        )

    def _forward_windows(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> SPAModelOutput:
        """`forward` for clips longer than the window: E_a and the pooled embedding are the means of the windows',
        weighted by their real samples (as `SPAForAudioClassification` takes E_a)."""

        def run(values: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            output = self(values, mask, return_dict=True)
            return output.audio_embeds, output.pooled_output

        settings = window_settings(self.config)
        embeds, pooled = in_windows(run, input_values, attention_mask, settings, (aggregate_embeds, aggregate_embeds))
        return SPAModelOutput(audio_embeds=embeds, pooled_output=pooled)


class SPAForAudioClassification(SPAPreTrainedModel):
    """SPA tagger: E_a -> linear classifier over C labels, trained with (L_BCE + L_OBCE)/2 + α · L_SPA, L_SPA in the
    form and with the label-space options `SPAConfig` sets (`spa_objective`, `center_label_text`, ...).

    Buffers (saved in the checkpoint, so inference and OmAP need no ontology file and no text encoder):
    `label_text_embeds` (C, V), the frozen text encoder's embeddings of the label descriptions T̂,
    `label_distances` (C, C), the ontology hop distances between the labels, and with `config.center_label_text`
    `label_text_mean` (V,), the mean of T̂ over the labels, subtracted before p_t.

    At inference (`model.eval()`), a clip longer than the window (`config.window_length_s`; see `SPAConfig`) is cut
    into windows that are scored in batches; `logits` is then the logit of the aggregated window scores (`mean`
    weighted by real samples, or `max`: `config.window_aggregation`) and `audio_embeds` the mean of the window
    embeddings weighted by their real samples. `spa-tag` and the audio-classification pipeline give the same scores.

    New models are built with `SPAForAudioClassification.from_backbone(...)`: label descriptions from a taxonomy,
    embedded once by the frozen text encoder, and optionally a converted checkpoint of the backbone. Building needs
    the ontology files, a text encoder and the converters, none of which a checkpoint carries, so it lives in the
    package (`modeling_spa.conversion.building.from_backbone`), which attaches it to this class when imported.
    """

    def __init__(self, config: SPAConfig):
        super().__init__(config)
        self.spa = SPAModel(config)
        self.classifier = nn.Linear(config.projection_dim, config.num_labels)
        # Centred label text goes through p_t without bias: a bias could carry every label to one point.
        self.text_projection = nn.Linear(
            config.text_hidden_size, config.projection_dim, bias=not config.center_label_text
        )
        self.register_buffer("label_text_embeds", torch.zeros(config.num_labels, config.text_hidden_size))
        if config.center_label_text:  # only then: checkpoints without centring keep their exact set of tensors
            self.register_buffer("label_text_mean", torch.zeros(config.text_hidden_size))
        # uint8: hop counts are small, and gloo (CPU DDP) cannot broadcast int16 buffers.
        self.register_buffer("label_distances", torch.zeros(config.num_labels, config.num_labels, dtype=torch.uint8))
        self.post_init()
        self.freeze_unused()

    def save_pretrained(self, save_directory, *args, **kwargs):
        # register_for_auto_class maps one Auto class; AutoModel gets the same class (see the package docstring).
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map["AutoModel"] = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _check_label_buffers(self) -> None:
        """Raise unless the buffers the loss needs hold label data (a model built from a bare config has zeros).

        Checked once per buffer state (`_version` changes with every in-place write, e.g. loading a checkpoint),
        so training pays one host read, not one per step.
        """
        needs_text = self.config.spa_alpha > 0
        needs_distances = (
            self.config.classification_loss == "obce" and self.config.num_labels > 1 and not self.config.single_label
        )
        if needs_distances and not self.config.has_hierarchy:
            raise ValueError(
                "OBCE weighs mistakes by graph distance between classes, and this model's classes are a flat label "
                f"list ({(self.config.taxonomy or {}).get('name')!r}): there is no hierarchy. Train with "
                "classification_loss='bce' (--classification_loss bce), or give the classes a taxonomy with parents."
            )
        buffers = [
            ("label_text_embeds (needed by L_SPA, spa_alpha > 0)", needs_text, self.label_text_embeds),
            ("label_distances (needed by OBCE)", needs_distances, self.label_distances),
        ]
        if self.config.center_label_text:
            buffers.append(("label_text_mean (needed by center_label_text)", needs_text, self.label_text_mean))
        key = (needs_text, needs_distances, *(buffer._version for _, _, buffer in buffers))
        if getattr(self, "_label_buffers_checked", None) == key or torch.compiler.is_compiling():
            return
        missing = [name for name, needed, buffer in buffers if needed and not buffer.any()]
        if missing:
            raise ValueError(
                f"This model's {' and '.join(missing)} are all zero: it was built from a bare config "
                "(`SPAForAudioClassification(config)` / `from_config`), which has no label text and no ontology "
                "distances, so SPA would align to nothing and OBCE would be plain BCE. Build a model to train with "
                "`SPAForAudioClassification.from_backbone(...)` (it embeds the label descriptions and computes the "
                "distances) or load one with `from_pretrained(...)`."
            )
        self._label_buffers_checked = key

    def freeze_unused(self) -> None:
        """Freeze what takes no part in the loss, or is configured frozen, so that DDP waits for no gradient and the
        optimizer holds no state for it: p_t at α = 0 or with `freeze_text_projection`, and the backbone's original
        AudioSet head (`audioset_head_modules`).

        Call it after loading: `from_pretrained` re-creates parameters with `requires_grad=True`.
        """
        self.text_projection.requires_grad_(self.config.spa_alpha > 0 and not self.config.freeze_text_projection)
        for name in getattr(self.spa.backbone, "audioset_head_modules", ()):
            self.spa.backbone.get_submodule(name).requires_grad_(False)

    def freeze_feature_encoder(self) -> None:
        """Freeze the backbone's CNN feature encoder (wav2vec2-style backbones, as transformers' method of that name);
        call it after loading, which makes every parameter trainable again."""
        if not hasattr(self.spa.backbone, "freeze_feature_encoder"):
            raise ValueError(f"The {self.config.backbone!r} backbone has no CNN feature encoder to freeze.")
        self.spa.backbone.freeze_feature_encoder()

    def audioset_scores(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The published checkpoint's own predictions: its original AudioSet head's (batch, 527) probabilities.

        Off the SPA path (the classifier c_a gives `logits`); it shows that a converted checkpoint computes what its
        authors' model computes, and it is the paper's "public checkpoint as is" baseline. In eval mode a clip longer
        than the window is scored window by window and aggregated as `forward` does (mean or max of the scores).
        """
        backbone = self.spa.backbone
        if not hasattr(backbone, "audioset_scores"):
            raise ValueError(f"The {self.config.backbone!r} backbone keeps no original AudioSet head.")

        def score(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            features, frame_mask = self.spa.frontend(values, mask)
            return backbone.audioset_scores(features.to(self.spa.audio_projection.weight.dtype), frame_mask)

        if not needs_windows(self, input_values):
            return score(input_values, attention_mask)
        return probabilities_in_windows(score, input_values, attention_mask, window_settings(self.config))

    def set_label_text(self, label_text_embeds: torch.Tensor) -> None:
        """Set T̂ (C, V), and with `config.center_label_text` its mean over the labels, the centre p_t sees."""
        with torch.no_grad():
            self.label_text_embeds.copy_(label_text_embeds)
            if self.config.center_label_text:
                self.label_text_mean.copy_(label_text_embeds.float().mean(dim=0))

    def text_input(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """What p_t is applied to for text embeddings (N, V): with `config.center_label_text` minus the stored mean of
        the *training* labels' T̂ (the centre p_t was trained around, also for new texts), in p_t's dtype."""
        if self.config.center_label_text:
            text_embeds = text_embeds - self.label_text_mean
        return text_embeds.to(self.text_projection.weight.dtype)

    def label_text_input(self) -> torch.Tensor:
        """What p_t is applied to: T̂, minus the stored label mean with `config.center_label_text`. (C, V)."""
        return self.text_input(self.label_text_embeds)

    def project_text(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """p_t of any text embeddings (N, V), centred as the labels are (`text_input`): (N, projection_dim)."""
        return self.text_projection(self.text_input(text_embeds))

    def label_embeds(self) -> torch.Tensor:
        """E_t = p_t(T̂) for all C labels (T̂ centred with `config.center_label_text`): (C, projection_dim)."""
        return self.project_text(self.label_text_embeds)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], text_encoder: str | None = None) -> torch.Tensor:
        """E_t = p_t(T(text)) of new label texts, embedded as the labels were (`label_text.encode_free_texts`: the
        checkpoint's text encoder, pooling and description style; `text_encoder` overrides the encoder's id or
        path). This runs the text encoder, which is no part of the model. (len(texts), projection_dim)."""
        from .label_text import encode_free_texts

        texts = [texts] if isinstance(texts, str) else list(texts)
        text = encode_free_texts(texts, self.config, text_encoder).to(self.label_text_embeds.device)
        return self.project_text(text)

    @torch.no_grad()
    def score_texts(
        self,
        input_values: torch.Tensor,
        texts: Sequence[str],
        text_encoder: str | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Zero-shot scores of label texts the model may never have trained on: the cosine of each clip's E_a with
        p_t(T(text)) of each text (`embed_texts`), (batch, len(texts)), in [-1, 1].

        E_a lives in the space of p_t(text), which L_SPA aligns it to, so any text can be ranked against a clip.
        Cosines are not probabilities: compare them between texts for one clip, or between clips for one text.
        The clips are scored in eval mode (long clips window by window: E_a is the mean of the window embeddings
        weighted by their real samples, as in `forward`). With `spa_alpha = 0`, p_t was never trained and the
        scores carry no learned alignment (a baseline for them).
        """
        was_training = self.training
        self.eval()
        try:
            audio_embeds = self(input_values, attention_mask).audio_embeds
        finally:
            self.train(was_training)
        return label_similarity(audio_embeds, self.embed_texts(texts, text_encoder))

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        mixup_index: torch.LongTensor | None = None,
        mixup_lambda: torch.FloatTensor | None = None,
        **kwargs,
    ) -> SPAOutput:
        """`labels` (batch, num_labels) multi-hot (one-hot for a single-label model), soft labels allowed. Other
        arguments as in [`SPAModel.forward`].

        At inference, clips longer than the window (`config.window_length_s`) are scored window by window and
        aggregated, as spa-tag does (`modeling_spa.windowing`); hidden states and attentions, which belong to one
        window, are then refused with an error (pass the windows yourself).
        In training the data collator has cropped the clips. In training mode with `labels` and mixup configured
        (`config.augmentation["mixup_alpha"]` > 0), the batch is mixed (`mixup_index`, `mixup_lambda` drawn unless
        given) and so are the labels the loss sees; `logits` are then those of the mixed clips.
        """
        if needs_windows(self, input_values):
            output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
            if output_hidden_states is None:
                output_hidden_states = self.config.output_hidden_states
            refuse_per_window_outputs(output_hidden_states, output_attentions)
            return self._forward_windows(input_values, attention_mask, labels)
        augmentation = training_augmentation(self.config.augmentation, self.training)
        if labels is not None and mixup_index is None and augmentation is not None and mixup_enabled(augmentation):
            mixup_index, mixup_lambda = draw_mixup(
                input_values.shape[0], augmentation["mixup_alpha"], augmentation["mixup_prob"], input_values.device
            )
        if labels is not None and mixup_index is not None:
            labels = mix(labels.float(), mixup_index, mixup_lambda)
        outputs = self.spa(
            input_values,
            attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            mixup_index=mixup_index,
            mixup_lambda=mixup_lambda,
            return_dict=True,
        )
        audio_embeds = outputs.audio_embeds
        return self._output(
            self.classifier(audio_embeds),
            audio_embeds,
            labels,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _output(
        self, logits: torch.Tensor, audio_embeds: torch.Tensor, labels: torch.Tensor | None, **backbone
    ) -> SPAOutput:
        """The output, with (L_BCE + L_OBCE)/2 (or L_BCE) + α · L_SPA and its parts when `labels` are given."""
        if labels is None:
            return SPAOutput(logits=logits, audio_embeds=audio_embeds, **backbone)
        self._check_label_buffers()
        if self.config.single_label:  # one class per clip: softmax cross-entropy (see SPAConfig.classification_loss)
            loss = cross_entropy = single_label_loss(logits, labels)
            bce = weighted = None
        else:
            cross_entropy = None
            loss, bce, weighted = obce_loss(logits, labels, self.label_distances, return_parts=True)
            if self.config.classification_loss == "bce":
                loss = bce
        terms = self._spa_terms(audio_embeds, labels) if self.config.spa_alpha > 0 else {}
        if terms:
            weighted_terms = (
                terms["spa_loss"]
                + self.config.spa_uniformity_weight * terms.get("spa_uniformity_loss", 0.0)
                + self.config.spa_geometry_weight * terms.get("spa_geometry_loss", 0.0)
            )
            loss = loss + self.config.spa_alpha * weighted_terms
        parts = {"bce_loss": bce, "obce_loss": weighted, "ce_loss": cross_entropy}
        return SPAOutput(loss=loss, logits=logits, audio_embeds=audio_embeds, **parts, **terms, **backbone)

    def _spa_terms(self, audio_embeds: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_SPA in the configured form, and the label-space terms whose weight is not 0 (see `SPAConfig`)."""
        label_embeds = self.label_embeds()
        config = self.config
        if config.spa_objective == "contrastive":
            terms = {"spa_loss": spa_contrastive_loss(audio_embeds, label_embeds, labels, config.spa_temperature)}
        elif config.spa_objective == "paper":
            terms = {"spa_loss": spa_alignment_loss(audio_embeds, label_embeds, labels)}
        else:  # set after construction, past SPAConfig's check
            raise ValueError(f"Unknown spa_objective {config.spa_objective!r}: use 'paper' or 'contrastive'.")
        if config.spa_uniformity_weight > 0:
            terms["spa_uniformity_loss"] = label_uniformity_loss(label_embeds)
        if config.spa_geometry_weight > 0:
            terms["spa_geometry_loss"] = label_geometry_loss(label_embeds, target=self._label_geometry_target())
        return terms

    def _label_geometry_target(self) -> torch.Tensor:
        """`label_geometry_target(self.label_text_input())`, computed once per state of the label-text buffers instead
        of at every step (at 527 labels and 768-dim text, a third of the geometry term's cost).

        The cache is a plain attribute, never saved, renewed when its key changes: each buffer's identity (`.to()`,
        loading with `assign` replace them; the cache holds the buffers, so a freed one's id cannot come back) and
        `_version` (in-place writes: `set_label_text`, `load_state_dict`; `_check_label_buffers` reads it too), p_t's
        dtype, and autocast, under which the uncached target is computed in the autocast dtype: the cached target is
        the uncached one, bit for bit. A compiled step computes it in its graph (dynamo cannot read `_version`).
        """
        if torch.compiler.is_compiling():
            return label_geometry_target(self.label_text_input())
        buffers = (
            (self.label_text_embeds, self.label_text_mean)
            if self.config.center_label_text
            else (self.label_text_embeds,)
        )
        device = buffers[0].device.type
        key = (
            *((id(buffer), buffer._version) for buffer in buffers),
            self.text_projection.weight.dtype,
            torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device),
        )
        cached = getattr(self, "_geometry_target_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():  # a constant; one cached in an evaluation (inference mode) serves training too
                cached = (key, buffers, label_geometry_target(self.label_text_input()))
            self._geometry_target_cache = cached
        return cached[2]

    def _forward_windows(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None
    ) -> SPAOutput:
        """`forward` for clips longer than the window: logits = logit(aggregated window scores), audio_embeds = the
        mean of the window embeddings weighted by their real samples; with labels, the loss of those outputs."""
        logits, audio_embeds = forward_in_windows(self, input_values, attention_mask, window_settings(self.config))
        return self._output(logits, audio_embeds, labels)  # with labels: an evaluation loop in eval mode


# Checkpoints carry their code: `auto_map` and these files are written by save_pretrained, so that
# `AutoModel.from_pretrained(path, trust_remote_code=True)` works where this package is not installed.
SPAConfig.register_for_auto_class("AutoConfig")
SPAForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
