"""The skull of a raw head CT (Hounsfield units): bone by threshold, then what is not skull taken away.

1. Metal (>= 3000 HU: clips, plates, dental fillings) is never bone: it is left out of the mask.
2. The head: everything denser than air (> -300 HU) is opened with a 12 mm ball on a ~2 mm working grid, which
   cuts off whatever is thinner than 24 mm (the scanner table, a headrest, a pad, cables) where it touches the head;
   of the pieces left, the head is the one with the most soft tissue (-300..150 HU), so a table that is larger than
   the head, or does not touch it, is not chosen either (a scan of bone in air, with nothing that thick, is all
   head). The head is then grown back by the same 12 mm within the
   body, so that the face, the nose and the ears the opening shaved are kept (and the table's first 12 mm too).
3. A table of bone-like density pressed against the skull: dense material (>= 150 HU) opened with a 5 mm ball (on a
   ~1 mm grid; 1.5 slices for thicker slices) keeps plates thicker than 10 mm; those of its pieces that reach
   outside the head are the table, taken away whole. (Bone thicker than 10 mm in the patch where the head rests on
   such a table can go with it; tables below 150 HU, the usual carbon and foam, never reach this step.)
4. Bone (>= 150 HU) inside the head, and of it the largest 26-connected piece: this drops beam-hardening specks,
   and the cervical spine and the mandible wherever they do not touch the skull.

Each step's removed volume is reported, and the commands write the chosen mask beside their result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from data_prep.io import VolumeError
from data_prep.preprocess import BONE_HU, largest_component

METAL_HU, AIR_HU = 3000.0, -300.0
OPENING_MM, WORKING_MM = 12.0, 2.0  # the head: its opening radius, on a grid of about this spacing
TABLE_MM, TABLE_WORKING_MM = 5.0, 1.0  # a dense table: its opening radius, on a finer grid


@dataclass
class SkullMask:
    skull: np.ndarray  # bool, the scan's grid
    skull_ml: float
    removed_ml: dict[str, float]  # bone-dense volume left out: metal, outside the head (table, ...), loose pieces


def _steps(spacing: np.ndarray, working_mm: float) -> np.ndarray:
    return np.maximum(1, np.round(working_mm / spacing)).astype(int)


def _expand(coarse: np.ndarray, step: np.ndarray, shape) -> np.ndarray:
    """A mask on a subsampled grid back on the scan's grid: each coarse voxel stands for its block."""
    full = coarse
    for axis, k in enumerate(step):
        full = np.repeat(full, k, axis=axis)
    return full[: shape[0], : shape[1], : shape[2]]


def _opening(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Morphological opening with a ball in mm, by two distance transforms (cheaper than a large structuring element)."""
    core = ndimage.distance_transform_edt(mask, sampling=spacing) > radius_mm
    if not core.any():  # (the transform of a mask without background has no meaning)
        return core
    return ndimage.distance_transform_edt(~core, sampling=spacing) <= radius_mm


def head_mask(hu: np.ndarray, spacing, opening_mm: float = OPENING_MM) -> np.ndarray:
    """The head: the body (> -300 HU) without what is thinner than ``2 * opening_mm`` where it joins (see the module
    docstring), on the scan's grid."""
    spacing = np.asarray(spacing, float)
    step = _steps(spacing, WORKING_MM)
    coarse = hu[:: step[0], :: step[1], :: step[2]]
    labels, n = ndimage.label(_opening(coarse > AIR_HU, opening_mm, spacing * step))
    if n == 0:  # nothing thicker than the ball: bone in air (a dry skull, a segmented CT), all of it is the head
        return hu > AIR_HU
    soft = (coarse > AIR_HU) & (coarse < BONE_HU)
    head = labels == int(np.argmax(ndimage.sum(soft, labels, index=np.arange(1, n + 1)))) + 1
    grown = ndimage.distance_transform_edt(~head, sampling=spacing * step) <= opening_mm
    return _expand(grown, step, hu.shape) & (hu > AIR_HU)


def dense_table(dense: np.ndarray, head: np.ndarray, spacing) -> np.ndarray:
    """Dense plates thicker than ``2 * TABLE_MM`` that reach outside the head (step 3 of the module docstring)."""
    spacing = np.asarray(spacing, float)
    if not (dense & ~head).any():
        return np.zeros_like(dense)
    step = _steps(spacing, TABLE_WORKING_MM)
    sub = (slice(None, None, step[0]), slice(None, None, step[1]), slice(None, None, step[2]))
    labels, n = ndimage.label(_opening(dense[sub], max(TABLE_MM, 1.5 * float(spacing.max())), spacing * step))
    outside = np.unique(labels[labels.astype(bool) & ~head[sub]])
    return _expand(np.isin(labels, outside[outside > 0]), step, dense.shape) & dense


def skull_from_ct(hu: np.ndarray, spacing, threshold: float = BONE_HU, opening_mm: float = OPENING_MM) -> SkullMask:
    """The skull of a head CT in HU on its own (x, y, z) grid (module docstring).

    Raises:
        VolumeError: no bone (no voxel >= ``threshold`` HU below the metal level) in the head.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    dense = hu >= threshold
    metal = hu >= METAL_HU
    bone = dense & ~metal
    head = head_mask(hu, spacing, opening_mm)
    table = dense_table(bone, head, spacing)
    inside = bone & head & ~table
    if not inside.any():
        raise VolumeError(f"no bone (>= {threshold:g} HU) inside the head; check that the scan is a CT in HU, or pass a mask")
    skull = largest_component(inside)
    removed = {
        "metal": float(metal.sum() * voxel_ml),
        "outside_head": float((bone & ~head).sum() * voxel_ml),
        "table_in_contact": float((bone & head & table).sum() * voxel_ml),
        "loose_pieces": float((inside & ~skull).sum() * voxel_ml),
    }
    return SkullMask(skull, float(skull.sum() * voxel_ml), removed)
