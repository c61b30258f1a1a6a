"""DSC, HD, HD95, ASSD and boundary DSC with medpy's definitions (the AutoImplant evaluation), computed fast.

Definitions (medpy ``metric.binary``; float64):

- DSC = 2|A and B| / (|A| + |B|), foreground = nonzero.
- Surface = mask XOR binary_erosion(mask, 6-connected structure); outside the array is background.
- Directed distances: Euclidean distance (mm, with the voxel spacing) from each surface voxel centre of one
  mask to the nearest surface voxel centre of the other.
- HD = max of both directed maxima; HD95 = ``numpy.percentile`` (linear) of both directed sets *pooled*
  (MONAI instead takes the max of two per-direction percentiles, which is larger); ASSD = mean of the
  two directed means.
- Boundary DSC (AutoImplant 2021): DSC of the implants restricted to voxels within 10 mm of the defective skull.

Speed: both masks are cropped to their union bounding box plus one voxel (exact: the margin is background,
or the array border, which erosion treats as background), and the nearest surface points are found with a
KD-tree instead of a distance transform over the whole volume.

Empty masks: medpy raises, MONAI returns inf/NaN (NaN then drops out of means and flatters a model that
missed). Here the policy is explicit and recorded per case: with ``empty="diagonal"`` (default) a missing
surface scores DSC 0 and HD = HD95 = ASSD = the volume's diagonal in mm, the worst finite value, so a miss
always worsens an average; ``empty="inf"`` gives inf. Two empty masks agree perfectly (DSC 1, distances 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial import cKDTree

from data_prep.box import bounding_box

Spacing = Sequence[float] | np.ndarray  # voxel size in mm per axis
EMPTY_POLICIES = ("diagonal", "inf")
METRICS = ("dsc", "hd", "hd95", "assd", "bdsc")  # what compute_metrics returns, in the order reports list them
BOUNDARY_MM = 10.0  # the boundary DSC's reach from the defective skull (AutoImplant 2021)
_SIX = ndimage.generate_binary_structure(3, 1)


def _as_mask(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name}: expected a 3D mask, got shape {a.shape}")
    return a if a.dtype == bool else a != 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """DSC of two masks; 1.0 when both are empty."""
    a, b = _as_mask(a, "a"), _as_mask(b, "b")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def _spacing(spacing: Spacing | None) -> np.ndarray:
    return np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX, border_value=0)


def _directed(from_surface, to_surface, to_points, spacing) -> np.ndarray:
    # a surface voxel that is also a surface voxel of the other mask is at distance 0: only the rest is queried
    shared = int(np.count_nonzero(from_surface & to_surface))
    rest = np.argwhere(from_surface & ~to_surface) * spacing
    far = cKDTree(to_points, balanced_tree=False, compact_nodes=False).query(rest, workers=-1)[0] if len(rest) else rest[:, 0]
    return np.concatenate([np.zeros(shared), far])


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Spacing | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) a->b and b->a, as medpy computes them (as a multiset; the order differs).
    Both masks must be non-empty."""
    a, b = _as_mask(a, "a"), _as_mask(b, "b")
    mm = _spacing(spacing)
    crop = bounding_box(a, b, margin=1)
    assert crop is not None  # both masks are non-empty
    sa, sb = _surface(a[crop]), _surface(b[crop])
    pa, pb = np.argwhere(sa) * mm, np.argwhere(sb) * mm
    return _directed(sa, sb, pb, mm), _directed(sb, sa, pa, mm)


def boundary_dice(
    pred_implant: ArrayLike, gt_implant: ArrayLike, defective: ArrayLike, spacing: Spacing | None = None, distance_mm: float = BOUNDARY_MM
) -> float:
    """DSC of two implants within ``distance_mm`` of the defective skull (AutoImplant 2021 bDSC)."""
    pred, gt = _as_mask(pred_implant, "prediction"), _as_mask(gt_implant, "reference")
    defective = _as_mask(defective, "defective")
    if not (pred.any() or gt.any()):
        return 1.0
    mm = _spacing(spacing)
    # a voxel within distance_mm of the skull has its nearest skull voxel inside this enlarged crop
    reach = [int(np.ceil(distance_mm / s)) + 1 for s in mm]
    crop = bounding_box(pred, gt, margin=reach)
    assert crop is not None  # one of them is non-empty
    if not defective[crop].any():
        near = np.zeros(pred[crop].shape, bool)
    else:
        near = ndimage.distance_transform_edt(~defective[crop], sampling=mm) <= distance_mm
    return dice(pred[crop] & near, gt[crop] & near)


def compute_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    spacing: Spacing | None = None,
    *,
    defective: ArrayLike | None = None,
    empty: str = "diagonal",
    boundary_mm: float = BOUNDARY_MM,
) -> dict:
    """DSC, HD, HD95 and ASSD (mm when ``spacing`` is given), and boundary DSC when ``defective`` is given.

    Args:
        pred, gt: 3D masks (nonzero = foreground), same shape.
        spacing: voxel size in mm per axis (default 1).
        defective: the defective skull, for the boundary DSC of implants.
        empty: policy when exactly one mask is empty (see the module docstring).
        boundary_mm: distance to the defective skull of the boundary DSC.

    Returns:
        ``{"dsc", "hd", "hd95", "assd", ["bdsc"], "empty"}``; ``empty`` is None, "prediction", "reference" or
        "both", and ``empty_policy`` says what was applied.

    Raises:
        ValueError: shapes differ, not 3D, or an unknown policy.
    """
    pred, gt = _as_mask(pred, "prediction"), _as_mask(gt, "reference")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {gt.shape}")
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    mm = _spacing(spacing)
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    crop = bounding_box(pred, gt, margin=1) or ()
    out: dict[str, Any] = {"dsc": dice(pred[crop], gt[crop])}
    if has_pred and has_gt:
        ab, ba = surface_distances(pred[crop], gt[crop], mm)
        both = np.concatenate([ab, ba])
        out.update(hd=float(max(ab.max(), ba.max())), hd95=float(np.percentile(both, 95)), assd=float(both.mean()))
        out["empty"] = None
    else:
        worst = float(np.linalg.norm(np.array(pred.shape) * mm)) if empty == "diagonal" else float("inf")
        value = 0.0 if not (has_pred or has_gt) else worst
        out.update(hd=value, hd95=value, assd=value)
        out["empty"] = "both" if not (has_pred or has_gt) else ("prediction" if not has_pred else "reference")
    out["empty_policy"] = empty
    if defective is not None:
        out["bdsc"] = boundary_dice(pred, gt, defective, mm, boundary_mm)
    return out


def implant_scores(implant: ArrayLike, truth: ArrayLike, defective: ArrayLike, spacing: Spacing | None = None) -> dict:
    """What training validates on, for one case: implant DSC and HD95 (mm; a miss scores the diagonal) and the
    DSC of the completed skull (defective + predicted implant against defective + true implant)."""
    implant, truth, defective = _as_mask(implant, "implant"), _as_mask(truth, "reference"), _as_mask(defective, "defective")
    scores = compute_metrics(implant, truth, spacing)
    return {"implant_dsc": scores["dsc"], "implant_hd95": scores["hd95"], "skull_dsc": dice(implant | defective, truth | defective)}
