"""The evaluation's metrics as MONAI metric classes, for evaluators, handlers and any MONAI loop.

Each class is a ``monai.metrics.CumulativeIterationMetric``: call it on batch-first tensors (one-hot ``B, C, X, Y,
Z``, or ``B, 1, X, Y, Z`` binary masks), then ``aggregate()`` and ``reset()``. Values come from
:func:`fam_skull.metrics.surface.compute_metrics`, so the per-item values (``get_buffer()``, float64) equal ``fam-skull
evaluate`` (and medpy; ``aggregate()`` reduces in float32, as MONAI does): HD95 pools both
directions as medpy does, and a mask missing on one side scores by the ``empty`` policy (the volume diagonal by
default) instead of MONAI's inf/NaN, so a miss worsens the mean instead of dropping out of it.

Spacing (mm) is taken per call as MONAI's ``HausdorffDistanceMetric`` takes it (``spacing=``: one number, one per
axis, or one sequence per batch item); without it, from the affine of a ``MetaTensor`` prediction (so metric
handlers, which pass no keywords, still measure in mm); otherwise 1.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction, ignore_background
from monai.utils import MetricReduction

from fam_skull.metrics.surface import BOUNDARY_MM, EMPTY_POLICIES, METRICS, compute_metrics


def _spacings(spacing, y_pred: torch.Tensor, batch: int) -> list[np.ndarray]:
    if spacing is None:
        affine = getattr(y_pred, "affine", None)
        if affine is None:
            return [np.ones(3)] * batch
        affine = affine.detach().cpu().double().numpy().reshape(-1, 4, 4)
        return [np.linalg.norm(affine[min(i, len(affine) - 1), :3, :3], axis=0) for i in range(batch)]
    if isinstance(spacing, (int, float, np.number)):
        return [np.full(3, float(spacing))] * batch
    spacing = list(spacing)
    if all(np.isscalar(s) for s in spacing):
        return [np.asarray(spacing, dtype=np.float64)] * batch
    if len(spacing) != batch:
        raise ValueError(f"spacing: one entry per batch item ({batch}), got {len(spacing)}")
    return [np.full(3, float(s[0])) if len(s) == 1 else np.asarray(s, dtype=np.float64) for s in spacing]


class SkullMetric(CumulativeIterationMetric):
    """One of :func:`~fam_skull.metrics.compute_metrics`'s values per batch item and channel.

    Args:
        metric: ``dsc``, ``hd``, ``hd95``, ``assd`` or ``bdsc`` (boundary DSC: needs ``defective=`` per call).
        include_background: keep channel 0 of one-hot input (a single-channel mask is always kept).
        reduction: MONAI's reduction of ``aggregate()``.
        get_not_nans: ``aggregate()`` also returns the count of values (there are no NaNs here).
        empty: what a mask missing on one side scores (:data:`~fam_skull.metrics.EMPTY_POLICIES`).
        boundary_mm: distance to the defective skull of the boundary DSC.
    """

    def __init__(
        self,
        metric: str,
        include_background: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        empty: str = "diagonal",
        boundary_mm: float = BOUNDARY_MM,
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {', '.join(EMPTY_POLICIES)}, got {empty!r}")
        self.metric, self.include_background, self.reduction = metric, include_background, reduction
        self.get_not_nans, self.empty, self.boundary_mm = get_not_nans, empty, boundary_mm

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, spacing=None, defective: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("expected a reference y next to y_pred")
        if y_pred.ndim != 5 or y_pred.shape != y.shape:
            raise ValueError(
                f"expected batch-first 3D tensors of one shape (B, C, X, Y, Z), got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        if self.metric == "bdsc" and defective is None:
            raise ValueError("bdsc needs the defective skull: call with defective=(B, 1, X, Y, Z) tensor")
        spacings = _spacings(spacing, y_pred, y_pred.shape[0])
        if not self.include_background and y_pred.shape[1] > 1:
            y_pred, y = ignore_background(y_pred, y)
        pred, ref = y_pred.detach().cpu().numpy() != 0, y.detach().cpu().numpy() != 0
        skull = None if defective is None else defective.detach().cpu().numpy() != 0
        out = torch.empty(pred.shape[:2], dtype=torch.float64)
        for b in range(pred.shape[0]):
            for c in range(pred.shape[1]):
                scores = compute_metrics(
                    pred[b, c],
                    ref[b, c],
                    spacings[b],
                    defective=None if skull is None else skull[b, 0],
                    empty=self.empty,
                    boundary_mm=self.boundary_mm,
                )
                out[b, c] = scores[self.metric]
        return out

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("nothing to aggregate: call the metric on a batch first")
        value, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (value, not_nans) if self.get_not_nans else value


class DSCMetric(SkullMetric):
    """Dice similarity coefficient (1 when both masks are empty)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("dsc", **kwargs)


class HDMetric(SkullMetric):
    """Hausdorff distance (mm), medpy's definition."""

    def __init__(self, **kwargs) -> None:
        super().__init__("hd", **kwargs)


class HD95Metric(SkullMetric):
    """95th percentile Hausdorff distance (mm), both directions pooled as medpy does."""

    def __init__(self, **kwargs) -> None:
        super().__init__("hd95", **kwargs)


class ASSDMetric(SkullMetric):
    """Average symmetric surface distance (mm)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("assd", **kwargs)


class BoundaryDSCMetric(SkullMetric):
    """DSC of implants within ``boundary_mm`` of the defective skull (pass ``defective=`` on every call)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bdsc", **kwargs)
