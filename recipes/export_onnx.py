"""Export an SPA checkpoint to ONNX: `python recipes/export_onnx.py MODEL_DIR OUTPUT_DIR [options]`, the same as
`spa-export` (see `modeling_spa/onnx_export.py` for the graphs, the files and the checks)."""

import sys

from modeling_spa.onnx_export import main

if __name__ == "__main__":
    sys.exit(main())
