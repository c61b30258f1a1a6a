"""What ``predict`` writes per case, in the case's original geometry: the completed skull and the implant as NIfTI
and optionally the implant's surface as an STL mesh (names from :class:`~fam_skull.common.paths.PredictionFolder`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from data_prep.io import atomic_write_bytes, from_array, write_image
from data_prep.preprocess import Layout
from fam_skull.common.paths import PredictionFolder


def write_stl(mask: np.ndarray, image: sitk.Image, path: Path) -> int:
    """A binary STL of ``mask``'s surface in physical (LPS) millimetres; returns the triangle count."""
    from skimage.measure import marching_cubes

    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, 0.5)
    verts -= 1  # undo the padding: vertices are continuous voxel indices
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.asarray(image.GetOrigin()) + (verts * np.asarray(image.GetSpacing())) @ direction.T
    tri = points[faces].astype(np.float32)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    records = np.zeros(len(tri), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    records["n"], records["v"] = normals, tri
    header = b"fam-skull implant, LPS mm".ljust(80, b" ") + np.uint32(len(tri)).tobytes()
    atomic_write_bytes(path, header + records.tobytes())
    return len(tri)


def write_case(output: Path, case_id: str, defective: np.ndarray, implant: np.ndarray, layout: Layout, stl: bool = False) -> dict:
    """Write the completed skull and the implant (and the implant's STL when there is one); returns their names."""
    files = PredictionFolder.case_files(case_id, stl and bool(implant.any()))
    write_image(from_array((defective | implant).astype(np.uint8), layout.original), output / files["complete"])
    implant_image = from_array(implant.astype(np.uint8), layout.original)
    write_image(implant_image, output / files["implant"])
    if "stl" in files:
        write_stl(implant, implant_image, output / files["stl"])
    return files
