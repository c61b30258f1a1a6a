"""Reading and writing 3D volumes with their geometry (SimpleITK first, nibabel as the fallback reader).

Arrays are indexed (x, y, z) like nibabel and MONAI; geometry is ITK's (LPS physical space, mm).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


class VolumeError(ValueError):
    """A volume that cannot be used; the message names the file and the reason."""


def int3(values: Sequence[int]) -> tuple[int, int, int]:
    """Three integers (a grid shape, a volume size) as a typed triple."""
    x, y, z = values
    return int(x), int(y), int(z)


def float3(values: Sequence[float]) -> tuple[float, float, float]:
    """Three numbers (a spacing, an origin) as a typed triple."""
    x, y, z = values
    return float(x), float(y), float(z)


@dataclass(frozen=True)
class Geometry:
    """Shape (x, y, z), spacing (mm), origin (mm, LPS) and row-major 3x3 direction of a volume."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(int3(image.GetSize()), float3(image.GetSpacing()), float3(image.GetOrigin()), tuple(map(float, image.GetDirection())))

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(tuple(d["shape"]), tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    def mismatch(self, reference: Geometry) -> str | None:
        """How this grid differs from ``reference``'s, or None: sizes equal, spacings within 1e-4 relative,
        origins within 1% of a voxel, directions within 1e-4."""
        if self.shape != reference.shape or not np.allclose(self.spacing, reference.spacing, rtol=1e-4):
            return (
                f"size/spacing {self.shape} / {tuple(round(v, 4) for v in self.spacing)} differ from "
                f"{reference.shape} / {tuple(round(v, 4) for v in reference.spacing)}"
            )
        offset = float(np.linalg.norm(np.subtract(self.origin, reference.origin)))
        if offset > 0.01 * min(reference.spacing):
            return (
                f"origin {tuple(round(v, 3) for v in self.origin)} is {offset:.3g} mm from {tuple(round(v, 3) for v in reference.origin)}"
            )
        if not np.allclose(self.direction, reference.direction, atol=1e-4):
            return f"direction {tuple(round(v, 4) for v in self.direction)} differs from {tuple(round(v, 4) for v in reference.direction)}"
        return None

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _read_nibabel(path: Path) -> sitk.Image:
    import nibabel as nib

    img: Any = nib.load(str(path))  # typed as nibabel's base class; a NIfTI image has dataobj and affine
    data = np.asarray(img.dataobj)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T), isVector=False)
    affine = img.affine.copy()
    affine[:2] *= -1  # nibabel affines map to RAS; ITK geometry is LPS
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if data.ndim == 3:
        image.SetSpacing(tuple(float(z) for z in zooms))
        image.SetOrigin(tuple(float(o) for o in affine[:3, 3]))
        image.SetDirection(tuple(float(d) for d in (affine[:3, :3] / zooms).flatten()))
    return image


def _nifti_problem(path: Path) -> str | None:
    """Why a NIfTI file's voxels cannot be trusted, or None. SimpleITK fills a cut-off file with zeros and reads
    NaN as 0 without a word; the header says how many bytes the voxels take, and nibabel keeps NaN."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img: Any = nib.load(str(path))  # a NIfTI image (see _read_nibabel)
        dtype = img.header.get_data_dtype()
        expected = int(img.header["vox_offset"]) + int(np.prod(img.shape)) * dtype.itemsize
        if path.name.endswith(".gz"):
            with open(path, "rb") as f:  # a gzip member ends with the uncompressed size mod 2**32
                f.seek(-4, os.SEEK_END)
                whole = int.from_bytes(f.read(4), "little") == expected % 2**32
        else:
            whole = path.stat().st_size >= expected
        if whole and dtype.kind != "f":
            return None
        data = np.asarray(img.dataobj)  # decodes every byte: EOFError for a truncated stream
    except (EOFError, OSError, ValueError, ImageFileError) as e:  # OSError covers gzip.BadGzipFile
        return f"truncated or corrupt ({type(e).__name__}: {e})"
    if not whole and not path.name.endswith(".gz"):
        return f"truncated ({path.stat().st_size} bytes, the header needs {expected})"
    if dtype.kind == "f" and np.isnan(data).any():
        return f"{int(np.isnan(data).sum())} NaN voxel(s)"
    return None


def read_image(path: str | os.PathLike, series: str | None = None) -> sitk.Image:
    """Read a 3D scalar volume: a file, or a folder of DICOM slices (:mod:`data_prep.dicom`; ``series``: the
    SeriesInstanceUID to read when the folder holds several).

    Raises:
        VolumeError: missing, unreadable or truncated file; not 3D (2D, a single slice, or 4D); NaN voxels; a DICOM
            folder whose series is ambiguous or not a regular grid.
    """
    path = Path(path)
    if path.is_dir():
        from data_prep.dicom import read_dicom_series  # imports this module

        image = read_dicom_series(path, series)
        if min(image.GetSize()) < 2:
            raise VolumeError(f"{path}: the series is {image.GetSize()} voxels, not a 3D volume")
        return image
    if not path.is_file():
        raise VolumeError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as itk_error:
        try:
            image = _read_nibabel(path)
        except Exception as nib_error:  # nibabel raises many types for bad files; report both readers
            reason = str(itk_error).strip().splitlines()[-1] if str(itk_error).strip() else "unreadable"
            raise VolumeError(f"{path}: cannot read it ({reason}; nibabel: {nib_error}); re-export it as NIfTI or NRRD") from None
    if path.name.endswith((".nii", ".nii.gz")):
        problem = _nifti_problem(path)
        if problem:
            raise VolumeError(f"{path}: {problem}; re-export or copy the file again")
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise VolumeError(
            f"{path}: expected a 3D scalar volume, got size {image.GetSize()} with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s); pass one 3D volume per file"
        )
    return image


def to_array(image: sitk.Image) -> np.ndarray:
    """The voxels indexed (x, y, z) (a copy: a view would dangle once ``image`` is freed)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def from_array(array: np.ndarray, geometry: Geometry | None = None) -> sitk.Image:
    """An image from an (x, y, z) array, with ``geometry``'s spacing, origin and direction."""
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    return geometry.apply(image) if geometry is not None else image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide outputs from collaborators


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``path``; when the block ends without error it replaces ``path`` (readers see
    the old or the new file, never a partial one) with the permissions the umask gives a new file.

    Raises:
        OSError: the folder is not writable or the disk is full; the message names ``path`` and the old file
            is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"{e.strerror or e}; the previous version is unchanged", str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write atomically (:func:`atomic_path`)."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as e:  # ITK reports a full disk or a failed write as RuntimeError
            raise OSError(errno.EIO, str(e).strip().splitlines()[-1], str(path)) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content.

    Raises:
        ValueError: unreadable or not valid JSON; the message names the file.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for text (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def file_stamp(path: str | os.PathLike) -> list:
    """What a cached result computed from ``path`` depends on: its resolved path, and its size and modification
    time when it exists (predictions, per-case scores and flatness values are recomputed when it changes)."""
    path = Path(path)
    if not path.is_file():
        return [str(path.resolve())]
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
