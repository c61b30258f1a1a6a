"""From a file's voxels to the training grid and back: binarize, denoise, reorient, crop/pad, resize.

A :class:`Layout` records every step for one case, so a prediction on the grid is written back in the
case's original geometry (shape, spacing, origin, direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from data_prep.io import Geometry, VolumeError, from_array, int3, to_array

BONE_HU = 150.0  # CT voxels at or above this (Hounsfield units) are bone
CANONICAL = "LPS"  # DICOM convention: +x to patient Left, +y Posterior, +z Superior; identity direction


def binarize(
    array: np.ndarray, kind: str = "auto", threshold: float = BONE_HU, name: str = "volume", spacing: Sequence[float] | None = None
) -> np.ndarray:
    """A bone mask: nonzero voxels of a mask, or voxels >= ``threshold`` HU of a CT; with the CT's ``spacing``, its
    skull (:func:`data_prep.ct.skull_from_ct`: metal, the table and loose pieces taken away).

    ``kind="auto"`` treats a volume with negative values as CT.

    Raises:
        VolumeError: NaN voxels, or an empty result.
    """
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise VolumeError(f"{name}: contains NaN voxels; fix or re-export the volume")
    if kind not in ("auto", "mask", "ct"):
        raise ValueError(f"kind must be 'auto', 'mask' or 'ct', got {kind!r}")
    is_ct = kind == "ct" or (kind == "auto" and array.min() < 0)
    if is_ct and spacing is not None:
        from data_prep.ct import skull_from_ct  # imports this module

        try:
            return skull_from_ct(array, spacing, threshold).skull
        except VolumeError as e:
            raise VolumeError(f"{name}: {e}") from None
    mask = array >= threshold if is_ct else array != 0
    if not mask.any():
        raise VolumeError(
            f"{name}: the mask is empty (no {f'voxel >= {threshold:g} HU' if is_ct else 'nonzero voxel'}); check the file and --input-kind"
        )
    return mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (skull CTs carry noise islands and the table)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def resize_field(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize of a scalar field (float32), voxel corners aligned as in :func:`resize_mask`."""
    import torch  # here, not at import: the command line reads this module's defaults without torch

    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    if tuple(values.shape) == tuple(shape):
        return t[0, 0].numpy().copy()
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0].numpy()


def resize_mask(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize of a binary mask, thresholded at 0.5."""
    return resize_field(mask, shape) >= 0.5


@dataclass(frozen=True)
class Layout:
    """How one case's volumes map between the original file and the training grid.

    ``z_shift``: canonical slice ``k + z_shift`` is slice ``k`` after the axial crop/pad (positive = top
    slices kept, negative = slices padded below).
    """

    original: Geometry
    orientation: str
    canonical: Geometry
    z_shift: int
    slices: int
    grid: tuple[int, int, int]

    @classmethod
    def plan(cls, image: sitk.Image, grid: Sequence[int], axial_slices: int | None = None) -> Layout:
        orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        canonical = Geometry.of(sitk.DICOMOrient(image, CANONICAL) if orientation != CANONICAL else image)
        n = canonical.shape[2]
        slices = axial_slices or n
        return cls(Geometry.of(image), orientation, canonical, n - slices, slices, int3(grid))

    def to_dict(self) -> dict:
        return {
            "original": self.original.to_dict(),
            "orientation": self.orientation,
            "canonical": self.canonical.to_dict(),
            "z_shift": self.z_shift,
            "slices": self.slices,
            "grid": list(self.grid),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        return cls(
            Geometry.from_dict(d["original"]),
            d["orientation"],
            Geometry.from_dict(d["canonical"]),
            int(d["z_shift"]),
            int(d["slices"]),
            tuple(d["grid"]),
        )

    def canonical_array(self, image: sitk.Image) -> np.ndarray:
        """``image`` (in this layout's original geometry) reoriented to LPS, indexed (x, y, z)."""
        if tuple(image.GetSize()) != self.original.shape:
            raise VolumeError(f"size {image.GetSize()} differs from the case's {self.original.shape}")
        if self.orientation != CANONICAL:
            image = sitk.DICOMOrient(image, CANONICAL)
        return to_array(image)

    def _crop(self, array: np.ndarray, shift: int, slices: int) -> np.ndarray:
        out = np.zeros(array.shape[:2] + (slices,), dtype=array.dtype)
        lo, hi = max(0, -shift), min(slices, array.shape[2] - shift)
        out[:, :, lo:hi] = array[:, :, lo + shift : hi + shift]
        return out

    def to_grid(self, canonical_mask: np.ndarray) -> np.ndarray:
        """A canonical mask cropped/padded axially and resized to the grid."""
        return resize_mask(self._crop(canonical_mask, self.z_shift, self.slices), self.grid)

    def grid_geometry(self) -> Geometry:
        """Geometry of the grid volumes: the cropped canonical extent, resampled (voxel corners kept)."""
        x, y, _ = self.canonical.shape
        old = np.array(self.canonical.spacing)
        new = old * np.array([x, y, self.slices]) / np.array(self.grid)
        corner = np.array(self.canonical.origin) - old / 2 + np.array([0, 0, self.z_shift * old[2]])
        return Geometry(self.grid, tuple(new.tolist()), tuple((corner + new / 2).tolist()), self.canonical.direction)

    def canonical_from_grid(self, grid_values: np.ndarray) -> np.ndarray:
        """A grid field (e.g. a probability) resized trilinearly to the canonical array, zero where the axial
        crop/pad removed slices."""
        cropped = resize_field(grid_values, self.canonical.shape[:2] + (self.slices,))
        return self._crop(cropped, -self.z_shift, self.canonical.shape[2])

    def from_grid(self, grid_mask: np.ndarray) -> sitk.Image:
        """A grid mask back in the original geometry, as a uint8 image."""
        return self.to_original(self.canonical_from_grid(grid_mask) >= 0.5)

    def to_original(self, canonical_mask: np.ndarray) -> sitk.Image:
        """A canonical-resolution mask in the original geometry."""
        image = from_array(canonical_mask.astype(np.uint8), self.canonical)
        if self.orientation != CANONICAL:
            image = sitk.DICOMOrient(image, self.orientation)
        return self.original.apply(image)
