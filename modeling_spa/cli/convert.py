"""`spa-convert`: a public AudioSet checkpoint (its authors' file) -> an SPA model folder in safetensors.

    spa-convert passt-s-swa-ap476 --backbone passt --output passt-spa        # a release's short name
    spa-convert Cnn14_mAP=0.431.pth --backbone cnn14 --output cnn14-spa \\
        --text_encoder sentence-transformers/all-MiniLM-L6-v2 --push_to_hub org/cnn14-spa
    spa-convert microsoft/wavlm-base-plus --backbone hub --output wavlm-spa   # any transformers speech encoder

The folder holds what `AutoModel.from_pretrained` loads (the model, its config and remote code, the feature
extractor) and a model card. The backbone is the converted checkpoint, with its original AudioSet head, so
`model.audioset_scores(...)` gives the published model's own predictions; the SPA parts (label text embedded by the
frozen text encoder, p_a, p_t, the classifier) are new, ready for `recipes/train.py --init_from FOLDER`. The file is
read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backbones import BACKBONES
from ..conversion import RELEASES, CheckpointError


def convert(
    source: str,
    backbone: str,
    output: str | Path,
    text_encoder: str = "google-bert/bert-base-uncased",
    description_style: str = "concat",
    label_mids: list[str] | None = None,
    **config_kwargs,
) -> Path:
    """Build the SPA model on the converted `source` and save it (model, extractor, card) into `output`."""
    from ..feature_extraction_spa import SPAFeatureExtractor
    from ..hub.cards import render_model_card
    from ..modeling_spa import SPAForAudioClassification

    model = SPAForAudioClassification.from_backbone(
        backbone,
        pretrained_backbone=source,
        label_mids=label_mids,
        text_encoder=text_encoder,
        description_style=description_style,
        **config_kwargs,
    )
    output = Path(output)
    model.save_pretrained(output)
    SPAFeatureExtractor.for_model(model.config).save_pretrained(output)
    card = render_model_card(
        model.config,
        output.name,
        training=f"Converted from `{model.config.pretrained_backbone}` by `spa-convert`; the SPA heads are untrained.",
    )
    (output / "README.md").write_text(card, encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spa-convert", description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        help=f"a checkpoint file, a release's short name ({', '.join(sorted(RELEASES))}), or a Hub id or folder "
        "(ast, htsat's CLAP tower, hub: wav2vec2, HuBERT, WavLM, Whisper, ...)",
    )
    parser.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    parser.add_argument("--output", required=True, help="the model folder to write")
    parser.add_argument("--text_encoder", default="google-bert/bert-base-uncased")
    parser.add_argument("--description_style", default="concat", choices=["direct", "prompt", "desc", "concat"])
    parser.add_argument("--classes", help="a JSON list of mids (default: the 527 AudioSet labels)")
    parser.add_argument("--projection_dim", type=int, default=512)
    parser.add_argument("--spa_alpha", type=float, default=0.3)
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also upload the folder to this model repo")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)

    from ..hub.publish import HubPushError, push_to_hub

    mids = json.loads(Path(args.classes).read_text()) if args.classes else None
    mids = mids["mids"] if isinstance(mids, dict) else mids  # the demo builder's classes.json
    try:
        folder = convert(
            args.source,
            args.backbone,
            args.output,
            args.text_encoder,
            args.description_style,
            mids,
            projection_dim=args.projection_dim,
            spa_alpha=args.spa_alpha,
        )
        print(f"Saved the converted model to {folder}")
        if args.push_to_hub:
            print(f"Pushed: {push_to_hub(folder, args.push_to_hub, args.private, 'Upload a converted SPA model')}")
    except (CheckpointError, OSError, HubPushError) as err:  # OSError: a Hub id that cannot be fetched
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
