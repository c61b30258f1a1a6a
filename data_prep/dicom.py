"""DICOM series: a folder of slices read with SimpleITK's series reader (GDCM), ordered by position, with the
geometry (spacing, origin, direction) taken from the slices' headers.

A series is refused, with one message naming the folder, when it cannot stand for a regular 3D grid: several
series in one folder (listed with their SeriesInstanceUIDs and descriptions: choose one), a single slice, slices of
differing orientation, gantry tilt (slices shifted sideways along the stack), duplicated or missing slices, or a
non-uniform slice spacing. Each of these would otherwise become a silently distorted volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from data_prep.io import VolumeError

POSITION, ORIENTATION, DESCRIPTION = "0020|0032", "0020|0037", "0008|103e"
SPACING_TOLERANCE = 0.01  # relative deviation of one slice gap from the median that is refused as non-uniform


@dataclass(frozen=True)
class Series:
    uid: str
    description: str
    files: tuple[str, ...]  # ordered by position along the slice normal (GDCM)


def _has_dicom_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding DICOM files (a part-10 file: 'DICM' after a 128-byte preamble)."""
    return path.is_dir() and any(p.is_file() and _has_dicom_magic(p) for p in path.iterdir())


def _header(file: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return reader


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def series_in(folder: Path) -> list[Series]:
    """The series in ``folder`` (not its sub-folders), each with its files in slice order."""
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        out.append(Series(uid, _tag(_header(files[0]), DESCRIPTION), files))
    return out


def _numbers(text: str, n: int, file: str, what: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split("\\")])
    except ValueError:
        values = np.array([])
    if values.shape != (n,):
        raise VolumeError(f"{file}: {what} ({ORIENTATION if n == 6 else POSITION}) is missing or malformed ({text!r})")
    return values


def check_series(folder: Path, series: Series) -> None:
    """Refuse a series whose slices do not form a regular grid (see the module docstring).

    Raises:
        VolumeError: one message naming the folder and the problem.
    """
    if len(series.files) < 2:
        raise VolumeError(f"{folder}: series {series.uid} has a single slice; a volume needs the whole series")
    headers = [_header(f) for f in series.files]
    orientations = [_numbers(_tag(h, ORIENTATION), 6, f, "the orientation") for h, f in zip(headers, series.files)]
    if any(np.abs(o - orientations[0]).max() > 1e-4 for o in orientations):
        raise VolumeError(f"{folder}: the slices of series {series.uid} have different orientations; export one stack per orientation")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    positions = np.array([_numbers(_tag(h, POSITION), 3, f, "the position") for h, f in zip(headers, series.files)])
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    if np.any(np.abs(along) < 1e-3):
        k = int(np.argmin(np.abs(along)))
        raise VolumeError(
            f"{folder}: duplicated slices at position {positions[k].round(3).tolist()} ({Path(series.files[k]).name} and "
            f"{Path(series.files[k + 1]).name}); remove the copies or export the series again"
        )
    gap = float(np.median(np.abs(along)))
    sideways = np.linalg.norm(steps - along[:, None] * normal, axis=1)
    if np.any(sideways > 1e-2 * gap):
        tilt = float(np.degrees(np.arctan2(np.median(sideways), gap)))
        raise VolumeError(
            f"{folder}: the slices are shifted sideways along the stack (gantry tilt of about {tilt:.1f} degrees); "
            "resample the series to an untilted grid first (e.g. dcm2niix corrects gantry tilt) and pass that volume"
        )
    ratio = np.abs(along) / gap
    if np.any(ratio > 1.5):
        k = int(np.argmax(ratio))
        raise VolumeError(
            f"{folder}: about {round(float(ratio[k])) - 1} slice(s) missing between {Path(series.files[k]).name} and "
            f"{Path(series.files[k + 1]).name} (a gap of {abs(along[k]):.3g} mm where the others are {gap:.3g} mm); "
            "export the whole series"
        )
    if np.any(np.abs(ratio - 1) > SPACING_TOLERANCE):
        raise VolumeError(
            f"{folder}: non-uniform slice spacing ({np.abs(along).min():.4g} to {np.abs(along).max():.4g} mm); resample the "
            "series to a uniform spacing first and pass that volume"
        )


def read_dicom_series(folder: str | Path, series: str | None = None) -> sitk.Image:
    """The series in ``folder`` (the only one, or the one whose SeriesInstanceUID is ``series``) as a 3D image in
    physical LPS millimetres, values as the scanner stored them after the rescale slope and intercept (HU for CT).

    Raises:
        VolumeError: no DICOM series, several without a choice, an unknown choice, or a series that is not a
            regular grid (:func:`check_series`).
    """
    folder = Path(folder)
    found = series_in(folder)
    if not found:
        raise VolumeError(f"{folder}: no DICOM series in this folder (DICOM files in sub-folders are not read)")
    if series is None and len(found) > 1:
        listed = "; ".join(f"{s.uid} ({s.description or 'no description'}, {len(s.files)} files)" for s in found)
        raise VolumeError(
            f"{folder}: holds {len(found)} DICOM series: {listed}; choose one with --series UID (fam-skull implant), "
            "or give each series a folder of its own"
        )
    chosen = found[0] if series is None else next((s for s in found if s.uid == series), None)
    if chosen is None:
        raise VolumeError(f"{folder}: no series {series}; it holds {', '.join(s.uid for s in found)}")
    check_series(folder, chosen)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise VolumeError(f"{folder}: cannot read series {chosen.uid} ({str(e).strip().splitlines()[-1]})") from None
