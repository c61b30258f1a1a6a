"""Bounding boxes of masks: the one helper behind the metrics' exact crops, the refinement box around a defect
and the skull's extent that defects are placed in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bounding_box(*masks: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every foreground voxel of ``masks`` (same shape), grown by ``margin`` voxels (one
    number, or one per axis) and clipped to the array; None when all are empty."""
    shape = masks[0].shape
    grow = np.broadcast_to(np.asarray(margin, dtype=int), (len(shape),))
    box = []
    for axis in range(len(shape)):
        other = tuple(a for a in range(len(shape)) if a != axis)
        idx = np.flatnonzero(np.logical_or.reduce([m.any(axis=other) for m in masks]))
        if not len(idx):
            return None
        box.append(slice(max(int(idx[0]) - int(grow[axis]), 0), min(int(idx[-1]) + int(grow[axis]) + 1, shape[axis])))
    return tuple(box)
