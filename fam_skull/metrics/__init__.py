"""Segmentation metrics with medpy's definitions (:mod:`.surface`, numpy only) and the same as MONAI metric classes
(:mod:`.monai_metrics`, imported on its own so the command line stays free of torch)."""

from fam_skull.metrics.surface import (
    BOUNDARY_MM,
    EMPTY_POLICIES,
    METRICS,
    boundary_dice,
    compute_metrics,
    dice,
    implant_scores,
    surface_distances,
)

__all__ = ["BOUNDARY_MM", "EMPTY_POLICIES", "METRICS", "boundary_dice", "compute_metrics", "dice", "implant_scores", "surface_distances"]
