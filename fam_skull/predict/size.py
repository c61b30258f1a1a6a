"""Head-size matching: a skull much wider or longer than the training skulls is scaled to their size before the
networks see it, and its implant scaled back.

A network trained on one population of skulls draws bone where that population has it: on a skull 14% wider
(the MNI152 template beside the synthetic skulls) it put plates on the inner side of both temporal walls and an
implant inside the true one (docs/studies.md). The size is the geometric mean of the bone's bounding-box width
(x) and length (y) in mm; height is left out, since a vertex defect lowers it. The scaling is isotropic, about
the bone's bounding-box centre, nearest-neighbour (the partition stays binary), and only beyond ``tolerance``
(the training skulls vary by about 4% and training scales them by up to 10%).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from data_prep.box import bounding_box
from data_prep.io import atomic_write_text, file_stamp, read_image, read_json, to_array
from data_prep.manifest import Manifest
from data_prep.preprocess import CANONICAL

log = logging.getLogger("fam_skull.predict")
LIMITS = (0.75, 1.33)  # factors outside this are clipped: such a skull is more likely a bad segmentation than a head
SIZE_FILE = "skull_size.json"  # in the run folder: the training skulls' size, computed once


def skull_size(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """The geometric mean (mm) of the bone's bounding-box extent along x and y of a canonical (LPS) mask.

    Raises:
        ValueError: an empty mask.
    """
    box = bounding_box(mask)
    if box is None:
        raise ValueError("the skull mask is empty")
    extent = [(box[axis].stop - box[axis].start) * float(spacing[axis]) for axis in (0, 1)]
    return float(np.sqrt(extent[0] * extent[1]))


def size_factor(mask: np.ndarray, spacing: Sequence[float], reference_mm: float, tolerance: float) -> float:
    """The isotropic factor that brings ``mask``'s :func:`skull_size` to ``reference_mm``, clipped to
    :data:`LIMITS`; 1.0 when it is within ``tolerance`` (a fraction) of 1."""
    factor = reference_mm / skull_size(mask, spacing)
    if abs(factor - 1) <= tolerance:
        return 1.0
    return float(np.clip(factor, *LIMITS))


def bone_centre(mask: np.ndarray) -> np.ndarray:
    """The centre of the bone's bounding box (voxel coordinates)."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("the skull mask is empty")
    return np.array([(s.start + s.stop - 1) / 2 for s in box])


def rescale(array: np.ndarray, factor: float, centre: np.ndarray) -> np.ndarray:
    """``array`` scaled by ``factor`` about ``centre`` (voxel coordinates) on the same grid, nearest neighbour;
    isotropic in mm on any spacing, since the factor is the same along every axis."""
    centre = np.asarray(centre, float)
    out = ndimage.affine_transform(array, np.full(3, 1 / factor), offset=centre - centre / factor, order=0)
    return out.astype(array.dtype, copy=False)


def training_skull_size(run: Path, manifest: Path) -> float | None:
    """The mean :func:`skull_size` of the training skulls of ``manifest`` (their complete skulls in the original
    geometry, one case per skull), cached in ``run/skull_size.json`` for that manifest; None, with a warning, when
    the manifest cannot be read (a run moved without its data: then no skull is scaled)."""
    cache, manifest = Path(run) / SIZE_FILE, Path(manifest)
    manifest = manifest / "manifest.json" if manifest.is_dir() else manifest
    stamp = file_stamp(manifest)
    try:
        cached = read_json(cache) if cache.is_file() else None
    except ValueError:
        cached = None
    if isinstance(cached, dict) and cached.get("manifest") == stamp and isinstance(cached.get("size_mm"), float):
        return cached["size_mm"]
    try:
        data = Manifest.load(manifest)
        skulls = {c["skull"]: c for c in data.role("train")}
        sizes = []
        for case in skulls.values():
            image = sitk.DICOMOrient(read_image(data.file(case, "original", "complete")), CANONICAL)
            sizes.append(skull_size(to_array(image) != 0, image.GetSpacing()))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        log.warning("head-size matching is off: the training skulls of %s cannot be read (%s)", manifest, e)
        return None
    if not sizes:
        log.warning("head-size matching is off: %s has no training case", manifest)
        return None
    size = float(np.mean(sizes))
    try:
        atomic_write_text(cache, json.dumps({"manifest": stamp, "size_mm": size, "skulls": len(sizes)}) + "\n")
    except OSError as e:  # a read-only run folder: computed again next time
        log.debug("could not cache %s: %s", cache, e)
    return size
