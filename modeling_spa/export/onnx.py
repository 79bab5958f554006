"""ONNX export of an SPA tagger: the front-end and the backbone + heads as two graphs, and a standalone tagger.

    spa-export MODEL_DIR OUTPUT_DIR [--opset 18] [--verify_dataset DIR --verify_split test --verify_clips 16]
    python OUTPUT_DIR/tag_onnx.py clip.wav [--top-k 5]     # numpy, soundfile, onnxruntime: no torch, no package

OUTPUT_DIR receives:
- `frontend.onnx`: one window of waveform `input_values` (batch, window samples) float32 and its `attention_mask`
  (batch, window samples) bool -> `features` (batch, frames, mels) and `frame_mask` (batch, frames): the model's
  `LogMelFrontend`, its FFT exported as ONNX `DFT` (opset 17+). A graph of its own, so that a user may feed
  features computed elsewhere, or replace it.
- `model.onnx`: `features` + `frame_mask` -> `logits` (batch, classes) and `audio_embeds` (batch, D): backbone,
  p_a and the classifier, as `SPAForAudioClassification` computes them in eval mode. The batch axis is dynamic in
  both graphs; the window length is fixed (the model's `window_length_s`), as the model itself scores windows.
- `labels.json` (class names, mids, ontology paths), `export.json` (the inference settings `tag_onnx.py` reads, the
  versions, and the verification), `tag_onnx.py` (a copy of `modeling_spa/export/onnx_tagger.py`) with the two files it
  reads audio with (`audio_files.py`, `waveforms.py`).

The exporter checks both graphs against torch on random windows (a short, masked one included), and with
`--verify_dataset` on the real clips of a split: the windows of each clip through onnxruntime and through the
torch model, compared logit by logit (max |difference| recorded in export.json).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import waveforms
from ..data import audio_files
from ..windowing import window_settings
from . import onnx_tagger

DEFAULT_OPSET = 18  # DFT is opset 17+; 18 is what torch.onnx's dynamo exporter writes natively
TAGGER_NAME = "tag_onnx.py"


class FeatureTagger(nn.Module):
    """backbone -> p_a -> classifier on log-mel features: `SPAForAudioClassification` after its front-end, in eval
    mode (no augmentation, no windowing: the features are one window's)."""

    def __init__(self, model):
        super().__init__()
        self.backbone = model.spa.backbone
        self.audio_projection = model.spa.audio_projection
        self.classifier = model.classifier

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.backbone(features.to(self.audio_projection.weight.dtype), frame_mask).pooler_output
        embeds = self.audio_projection(pooled)
        return self.classifier(embeds), embeds


def inference_settings(model) -> onnx_tagger.Settings:
    """The window, hop and aggregation the model uses at inference, in samples at its rate."""
    settings = window_settings(model.config)
    return onnx_tagger.Settings(
        sampling_rate=model.config.frontend["sampling_rate"],
        window=settings.length,
        hop=settings.hop,
        aggregation=settings.aggregation,
        min_samples=model.spa.frontend.min_samples,
    )


def example_windows(settings: onnx_tagger.Settings, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows for tracing and checking; the last is a short clip, its padding masked."""
    generator = torch.Generator().manual_seed(0)
    values = 0.1 * torch.randn(batch, settings.window, generator=generator)
    mask = torch.ones(batch, settings.window, dtype=torch.bool)
    short = max(settings.min_samples, settings.window // 3)
    values[-1, short:] = 0.0
    mask[-1, short:] = False
    return values, mask


def export_graph(module: nn.Module, inputs: tuple, names: tuple[list[str], list[str]], path: Path, opset: int) -> None:
    """torch.onnx's dynamo exporter with a dynamic batch axis on every input; one file, weights inside."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not the user's business
        program = torch.onnx.export(
            module,
            inputs,
            input_names=names[0],
            output_names=names[1],
            dynamic_shapes=tuple({0: batch} for _ in inputs),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def export_graphs(model, out: Path, opset: int) -> None:
    """frontend.onnx and model.onnx of an eval-mode model (see the module docstring)."""
    settings = inference_settings(model)
    values, mask = example_windows(settings)
    frontend_names = (["input_values", "attention_mask"], ["features", "frame_mask"])
    export_graph(model.spa.frontend, (values, mask), frontend_names, out / "frontend.onnx", opset)
    features, frame_mask = model.spa.frontend(values, mask)
    head_names = (["features", "frame_mask"], ["logits", "audio_embeds"])
    export_graph(FeatureTagger(model).eval(), (features, frame_mask), head_names, out / "model.onnx", opset)


def label_texts(model) -> dict:
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    return {"names": names, "mids": config.label_mids, "paths": config.label_paths}


def torch_window_logits(model, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The torch model's logits of windows (as `model(...)` computes them at inference)."""
    with torch.inference_mode():
        output = model(input_values=torch.from_numpy(values), attention_mask=torch.from_numpy(mask))
    return output.logits.float().numpy()


def compare_windows(model, tagger: onnx_tagger.ExportedTagger, values: np.ndarray, mask: np.ndarray) -> float:
    """max |logit difference| between onnxruntime and torch on the same windows."""
    difference = onnx_tagger.window_logits(tagger, values, mask) - torch_window_logits(model, values, mask)
    return float(np.abs(difference).max())


def verify_random(model, out: Path) -> dict:
    """Both graphs against torch on the random example windows (a masked short one among them)."""
    tagger = onnx_tagger.load(out)
    values, mask = (t.numpy() for t in example_windows(tagger.settings, batch=3))
    return {"windows": len(values), "max_abs_logit_difference": compare_windows(model, tagger, values, mask)}


def verify_clips(model, out: Path, dataset: str, split: str, clips: int, config: str | None = None) -> dict:
    """The windows of the first `clips` clips of a dataset split, through onnxruntime and torch. A clip that cannot
    be decoded (or is shorter than one analysis window) is skipped and named; a check that compared nothing fails."""
    from ..data import BadAudioError, decode_audio, load_audioset

    tagger = onnx_tagger.load(out)
    data = load_audioset(dataset, split, config)
    rows = data.select(range(min(clips, len(data))))
    differences, windows, scores, scale, skipped = [], 0, [], 0.0, []
    for row in rows:
        try:
            wave = decode_audio(row["audio"], tagger.settings.sampling_rate, row["video_id"],
                                tagger.settings.min_samples)  # fmt: skip
        except BadAudioError as err:
            skipped.append(f"{row['video_id']}: {err}")
            continue
        values, mask, weights = onnx_tagger.windows(wave, tagger.settings)
        onnx_logits = onnx_tagger.window_logits(tagger, values, mask)
        torch_logits = torch_window_logits(model, values, mask)
        differences.append(float(np.abs(onnx_logits - torch_logits).max()))
        scale = max(scale, float(np.abs(torch_logits).max()))  # what the differences are small against
        aggregation = tagger.settings.aggregation
        clip_scores = [onnx_tagger.aggregate(logits, weights, aggregation) for logits in (onnx_logits, torch_logits)]
        scores.append(float(np.abs(clip_scores[0] - clip_scores[1]).max()))
        windows += len(values)
    if not differences:
        raise ValueError(f"no clip of {dataset} ({split}) could be compared: {len(rows)} read, skipped: {skipped}")
    return {"dataset": dataset, "split": split, "clips": len(differences), "windows": windows,
            "max_abs_logit_difference": max(differences), "max_abs_score_difference": max(scores),
            "max_abs_logit": scale, "skipped_clips": skipped}  # fmt: skip


def export(model_dir: str, output_dir: str | Path, opset: int = DEFAULT_OPSET, model=None) -> dict:
    """Export `model_dir` (or an already loaded `model`) to `output_dir`; returns what export.json records."""
    import onnx

    if model is None:
        from ..modeling_spa import SPAForAudioClassification

        model = SPAForAudioClassification.from_pretrained(model_dir)
    model = model.float().eval()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_graphs(model, out, opset)
    for name in ("frontend.onnx", "model.onnx"):
        onnx.checker.check_model(str(out / name))
    (out / "labels.json").write_text(json.dumps(label_texts(model), indent=1, ensure_ascii=False) + "\n")
    # The tagger and the reader it imports as siblings: the package's own files, so the export reads files as spa-tag.
    shutil.copyfile(onnx_tagger.__file__, out / TAGGER_NAME)
    for module in (audio_files, waveforms):
        shutil.copyfile(module.__file__, out / Path(module.__file__).name)
    info = {
        "source": str(model_dir),
        "backbone": model.config.backbone,
        "opset": opset,
        "inference": inference_settings(model).__dict__,
        "graphs": {
            "frontend.onnx": "input_values (batch, window) float32, attention_mask (batch, window) bool -> "
            "features (batch, frames, mels), frame_mask (batch, frames)",
            "model.onnx": "features, frame_mask -> logits (batch, classes), audio_embeds (batch, D)",
        },
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
    }
    _write_info(out, info)
    info["verification"] = {"random_windows": verify_random(model, out)}
    _write_info(out, info)
    return info


def _write_info(out: Path, info: dict) -> None:
    (out / "export.json").write_text(json.dumps(info, indent=1) + "\n")
