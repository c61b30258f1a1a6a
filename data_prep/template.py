"""A real-anatomy skull that no generator here made: bone built around the brain of the MNI152 template (ICBM 2009a
nonlinear symmetric T1 at 1 mm, the file the nilearn package ships in ``nilearn/datasets/data``).

The template is skull-stripped, so the skull is built around it: the brain's envelope (closed with a 10 mm ball,
holes filled), 2 mm of cerebrospinal fluid, then 6.5 mm of bone (the synthetic skulls' mean thickness); below the
cerebellum it is cut off, which leaves the foramen magnum round the brainstem. The vault's shape, the temporal
bulges, the occiput over the cerebellum and the cranial fossae under the frontal and temporal lobes are the
template's; there is no face and no mandible. nilearn is read as data only (``pip install nilearn``), never
imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from data_prep.io import Geometry, float3, from_array, int3, read_image, to_array
from data_prep.preprocess import CANONICAL, largest_component, resize_mask

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
CLOSING_MM, CSF_MM, BONE_MM = 10.0, 2.0, 6.5
BRAINSTEM_SHARE = 0.15  # an axial slice whose brain area is under this share of the largest holds the brainstem only


def template_path() -> Path:
    """The MNI152 T1 file inside the installed nilearn package.

    Raises:
        FileNotFoundError: nilearn is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the MNI152 template comes with nilearn: pip install nilearn (fam-skull reads its file, never imports it)")
    path = Path(spec.origin).parent / "datasets" / "data" / TEMPLATE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in this nilearn version; install one that ships {TEMPLATE}")
    return path


def _grow(mask: np.ndarray, mm: float) -> np.ndarray:
    return ndimage.distance_transform_edt(~mask) <= mm  # the template's voxels are 1 mm


def template_skull(shape: tuple[int, int, int] | None = None) -> sitk.Image:
    """The template's skull as a uint8 mask in LPS, at 1 mm or resized to ``shape`` over the same field of view
    (about 197 x 233 x 189 mm, close to the synthetic skulls' 200 x 230 x 200 mm)."""
    image = sitk.DICOMOrient(read_image(template_path()), CANONICAL)
    brain = to_array(image) > 5
    grown = _grow(brain, CLOSING_MM)
    envelope = ndimage.binary_fill_holes(ndimage.distance_transform_edt(grown) > CLOSING_MM)
    inner = _grow(envelope, CSF_MM)
    skull = _grow(inner, BONE_MM) & ~inner
    area = brain.sum(axis=(0, 1))
    top = int(np.argmax(area))
    below = np.flatnonzero(area[:top] < BRAINSTEM_SHARE * area[top])
    if len(below):  # LPS: z grows upwards, so the brainstem-only slices are the low ones
        skull[:, :, : below[-1] + 1] = False
    skull = largest_component(skull)
    geometry = Geometry.of(image)
    if shape is None:
        return from_array(skull.astype(np.uint8), geometry)
    size = int3(shape)
    spacing = float3([sp * n / m for sp, n, m in zip(geometry.spacing, geometry.shape, size)])
    corner = np.array(geometry.origin) - np.array(geometry.spacing) / 2
    origin = float3((corner + np.array(spacing) / 2).tolist())
    return from_array(resize_mask(skull, size).astype(np.uint8), Geometry(size, spacing, origin, geometry.direction))
