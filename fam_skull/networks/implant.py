"""The implant from a network's output, for both stages: one place for what training validates and what
``predict`` (and the exported bundle) writes.

Coarse stage: the network sees the whole defective skull on the training grid; its implant is its foreground
minus the bone it was given. Refinement stage: a MONAI UNet with 2 input channels (the defective skull and the
coarse implant probability upsampled to the scan's resolution) predicts the implant by sliding window inside a
box, the coarse implant's bounding box grown by ``margin_mm`` and clipped to the volume. Refinement works on
canonical (LPS) arrays at the scan's resolution; :class:`~data_prep.preprocess.Layout` maps them to and from the
original geometry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from data_prep.box import bounding_box
from data_prep.preprocess import Layout

WINDOW_BATCH = 8  # sliding-window patches per forward: one at a time was 1.8x (4) to 2.2x (16) slower on 2 CPU cores


def implant_mask(logits: torch.Tensor, defective: torch.Tensor) -> torch.Tensor:
    """The implant a network predicts: its foreground (argmax of 2 classes) minus the bone it was given.

    The same for both ``model.target``s: an implant network's output is the implant, and a completion
    network's completed skull minus its input is the bone it added. Shapes (B, 2, ...) and (B, 1, ...).
    """
    return (logits.argmax(1, keepdim=True) == 1) & ~(defective > 0.5)


def mirrored(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time flips: the implant probability of ``forward`` on ``x`` and on ``x`` mirrored left-right (dim 2,
    the LPS x axis of (B, C, X, Y, Z)) mirrored back; their mean and their absolute difference (B, 1, ...)."""
    p = torch.softmax(forward(x).float(), 1)[:, 1:2]
    q = torch.softmax(forward(x.flip(2)).float(), 1)[:, 1:2].flip(2)
    return (p + q) / 2, (p - q).abs()


def _grid_forward(model: torch.nn.Module, roi_size: Sequence[int] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if roi_size is None:
        return model

    def window(x: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(x, roi_size, WINDOW_BATCH, model, overlap=0.25)
        assert isinstance(logits, torch.Tensor)  # the model returns one tensor
        return logits

    return window


@torch.no_grad()
def implant_on_grid(
    model: torch.nn.Module,
    defective_grid: np.ndarray,
    device: torch.device,
    roi_size: Sequence[int] | None = None,
    flips: bool = False,
    disagreement: np.ndarray | None = None,
) -> np.ndarray:
    """The coarse network's implant (:func:`implant_mask`) on the training grid (bool); with ``flips``, where the
    mean probability of :func:`mirrored` exceeds 0.5, its difference written into ``disagreement`` if given."""
    x = torch.from_numpy(defective_grid.astype(np.float32))[None, None].to(device)
    forward = _grid_forward(model, roi_size)
    if not flips:
        return implant_mask(forward(x), x)[0, 0].cpu().numpy()
    mean, difference = mirrored(forward, x)
    if disagreement is not None:
        disagreement[...] = difference[0, 0].cpu().numpy()
    return ((mean > 0.5) & (x < 0.5))[0, 0].cpu().numpy()


@torch.no_grad()
def coarse_probability(model: torch.nn.Module, defective_grid: np.ndarray, device: torch.device, flips: bool = False) -> np.ndarray:
    """The coarse network's implant probability on the grid (float32), zero on the bone it was given (with
    ``flips``, the mean of :func:`mirrored`)."""
    x = torch.from_numpy(defective_grid.astype(np.float32))[None, None].to(device)
    p = mirrored(model, x)[0][0, 0] if flips else torch.softmax(model(x).float(), 1)[0, 1]
    return (p * (x[0, 0] < 0.5)).cpu().numpy()


def scan_probability(
    model: torch.nn.Module, defective_grid: np.ndarray, layout: Layout, defective: np.ndarray, device: torch.device, flips: bool = False
) -> np.ndarray:
    """The coarse implant probability resampled to the canonical array at the scan's resolution, zero on
    ``defective`` (the canonical defective skull): the refinement network's second input channel."""
    return (layout.canonical_from_grid(coarse_probability(model, defective_grid, device, flips)) * ~defective).astype(np.float32)


def defect_box(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` grown by ``margin_mm`` on every side (rounded up to whole voxels per axis)
    and clipped to the array; None for an empty mask."""
    return bounding_box(mask, margin=[int(np.ceil(margin_mm / s)) for s in spacing])


@torch.no_grad()
def refine_implant(
    model: torch.nn.Module,
    defective: np.ndarray,
    probability: np.ndarray,
    spacing: Sequence[float],
    patch: Sequence[int],
    margin_mm: float,
    device: torch.device,
    box: tuple[slice, ...] | None = None,
    flips: bool = False,
    disagreement: np.ndarray | None = None,
) -> np.ndarray:
    """The refined implant (bool, canonical array at the scan's resolution).

    Args:
        defective: the defective skull (canonical, scan resolution).
        probability: the coarse implant probability resampled to the same array.
        spacing: voxel size in mm; patch: the sliding window (voxels); margin_mm: the box margin.
        box: the box to refine (default: around the coarse implant, probability >= 0.5).
        flips: the mean probability of :func:`mirrored` above 0.5 instead of the network's argmax; its
            difference is written into ``disagreement`` (same shape as ``defective``) inside the box if given.
    """
    out = np.zeros(defective.shape, bool)
    box = box if box is not None else defect_box(probability >= 0.5, spacing, margin_mm)
    if box is None:
        return out
    x = torch.from_numpy(np.stack([defective[box], probability[box]]).astype(np.float32))[None].to(device)

    def window(t: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(t, tuple(patch), WINDOW_BATCH, model, overlap=0.25, mode="gaussian")
        assert isinstance(logits, torch.Tensor)  # the model returns one tensor
        return logits

    if not flips:
        out[box] = implant_mask(window(x), x[:, :1])[0, 0].cpu().numpy()
        return out
    mean, difference = mirrored(window, x)
    out[box] = ((mean > 0.5) & (x[:, :1] < 0.5))[0, 0].cpu().numpy()
    if disagreement is not None:
        disagreement[box] = difference[0, 0].cpu().numpy()
    return out


def clean_implant(implant: np.ndarray, spacing: Sequence[float], min_component_mm3: float) -> np.ndarray:
    """Drop connected components smaller than ``min_component_mm3`` (resampling leaves thin slivers along
    the defect's rim)."""
    if min_component_mm3 <= 0 or not implant.any():
        return implant
    labels, _ = ndimage.label(implant, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel()) * float(np.prod(spacing))
    keep = sizes >= min_component_mm3
    keep[0] = False
    return keep[labels]


def rim_implant(implant: np.ndarray, defective: np.ndarray, spacing: Sequence[float], reach_mm: float | None) -> np.ndarray:
    """Keep the implant's connected components that touch the defective skull or come within ``reach_mm`` of it:
    an implant fills a gap of the skull and so meets its rim; a piece floating in the cranial cavity or outside the
    head does not (None: keep everything)."""
    if reach_mm is None or not implant.any():
        return implant
    labels, n = ndimage.label(implant, structure=np.ones((3, 3, 3), bool))
    reach = [int(np.ceil(reach_mm / s)) for s in spacing]
    box = bounding_box(implant, margin=[r + 1 for r in reach])
    assert box is not None  # the implant is not empty
    near = ndimage.distance_transform_edt(~defective[box], sampling=spacing) <= reach_mm
    # touching counts at any voxel size: with voxels coarser than reach_mm no implant voxel lies within it of bone
    near |= ndimage.binary_dilation(defective[box], np.ones((3, 3, 3), bool))
    touching = np.unique(labels[box][near & implant[box]])
    keep = np.zeros(n + 1, bool)
    keep[touching] = True
    keep[0] = False
    return keep[labels]


def drop_strays(implant: np.ndarray, spacing: Sequence[float], reach_mm: float | None, share: float = 0.1) -> np.ndarray:
    """Drop the implant's small pieces (under ``share`` of the largest piece's volume) that lie farther than
    ``reach_mm`` from every large one (None: keep everything).

    Large pieces are always kept: a skull may have two or three defects. A small piece near a large one is a
    fragment of its implant (thin facial bone breaks into pieces); a small piece far from all of them is bone the
    network added on intact bone where this skull's shape differs from the training skulls'.
    """
    if reach_mm is None or not implant.any():
        return implant
    labels, n = ndimage.label(implant, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    large = sizes >= share * sizes.max()
    large[0] = False
    if large[1:].all():
        return implant
    distance = ndimage.distance_transform_edt(~large[labels], sampling=spacing)
    keep = large.copy()
    keep[1:] |= ndimage.minimum(distance, labels, index=np.arange(1, n + 1)) <= reach_mm
    return keep[labels]
