"""OmAP and mAP (`compute_omap`). The implementation is `metrics/omap/omap_core.py`, shipped as
`modeling_spa.omap_metric`: it is the core of the self-contained `evaluate` module too, so it exists once."""

from .omap_metric.omap_core import (
    check_distances,
    compute_omap,
    default_distances,
    level_scales,
    nearest_positive_distance,
)

__all__ = ["check_distances", "compute_omap", "default_distances", "level_scales", "nearest_positive_distance"]
