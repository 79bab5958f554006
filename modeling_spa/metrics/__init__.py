"""The metrics: OmAP, mAP and average precision, whose one home is the evaluate module's folder `metrics/omap`, and
the tools that install or publish that module (`evaluate.load("omap")`)."""

from .omap import (
    average_precision,
    check_distances,
    compute_omap,
    default_distances,
    level_scales,
    nearest_positive_distance,
)

__all__ = [
    "average_precision",
    "check_distances",
    "compute_omap",
    "default_distances",
    "level_scales",
    "nearest_positive_distance",
]
