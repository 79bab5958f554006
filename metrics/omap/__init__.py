"""The OmAP `evaluate` module (`omap.py`) and its numpy core (`omap_core.py`); installed with the package as
`modeling_spa.omap_metric`. `evaluate` loads `omap.py` directly and never imports this file."""
