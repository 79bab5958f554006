"""`spa-export MODEL OUTPUT`: an SPA checkpoint as ONNX graphs and a torch-free tagger (`modeling_spa.export.onnx`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..export.onnx import DEFAULT_OPSET, TAGGER_NAME, _write_info, export, verify_clips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spa-export", description="Export an SPA checkpoint to ONNX, with a torch-free tagger"
    )
    parser.add_argument("model", help="a saved SPA model folder or a Hub id")
    parser.add_argument("output", help="the export folder")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--verify_dataset", help="an AudioSet-format dataset whose real clips check the export")
    parser.add_argument("--verify_split", default="test")
    parser.add_argument("--verify_dataset_config", help="the dataset's configuration, where it has several")
    parser.add_argument("--verify_clips", type=int, default=16)
    args = parser.parse_args(argv)
    if args.verify_clips < 1:
        parser.error("--verify_clips must be at least 1")
    if args.opset < 17:
        parser.error("the front-end's FFT needs ONNX DFT: opset 17 or later")
    info = export(args.model, args.output, args.opset)
    if args.verify_dataset:
        from ..modeling_spa import SPAForAudioClassification

        model = SPAForAudioClassification.from_pretrained(args.model).float().eval()
        try:
            clips = verify_clips(model, Path(args.output), args.verify_dataset, args.verify_split, args.verify_clips,
                                 args.verify_dataset_config)  # fmt: skip
        except ValueError as err:  # the export is written; its check on real clips could not run
            parser.exit(1, f"spa-export: wrote {args.output}, but the check on {args.verify_dataset} failed: {err}\n")
        info["verification"]["clips"] = clips
        _write_info(Path(args.output), info)
    print(json.dumps(info["verification"], indent=1))
    print(f"Wrote {args.output}: frontend.onnx, model.onnx, labels.json, export.json, {TAGGER_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
