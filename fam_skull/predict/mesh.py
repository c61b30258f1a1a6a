"""A printable surface of a mask: marching cubes at the scan's resolution, Taubin smoothing, optional decimation,
normals outward, watertight, in LPS or RAS millimetres (trimesh: numpy-only, with the watertight and winding checks,
the smoothing, STL export and quadric decimation through fast-simplification; VTK would add a 100 MB wheel).

LPS is DICOM's patient frame (and ITK's, so SimpleITK's physical points). 3D Slicer works in RAS internally but,
since 4.11, writes and reads mesh files in LPS, following a ``SPACE=LPS``/``SPACE=RAS`` note in the file header
(written here); CAD tools take the millimetres as they come. LPS, the default, keeps a mesh where the scan is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from data_prep.box import bounding_box
from data_prep.io import atomic_write_bytes
from fam_skull.predict.options import SMOOTHING_ITERATIONS, Frame

BLUR_VOXELS = 0.5  # keeps plates of one voxel (thinner), drops single loose voxels


class MeshError(ValueError):
    """The mask has no surface, or the surface is not a closed, consistently wound mesh."""


def surface_mesh(
    mask: np.ndarray,
    image: sitk.Image,
    *,
    frame: Frame = "LPS",
    smoothing: int = SMOOTHING_ITERATIONS,
    faces: int | None = None,
):
    """The closed surface of an (x, y, z) ``mask`` laid out on ``image``'s grid, as a ``trimesh.Trimesh`` in
    physical millimetres of ``frame``, its triangles wound counter-clockwise seen from outside (positive volume)
    for any direction matrix, mirrored ones included; decimated to about ``faces`` triangles when given.

    Raises:
        MeshError: an empty mask, or a mesh that is not watertight with consistent winding after decimation.
    """
    import trimesh
    from skimage.measure import marching_cubes

    if frame not in ("LPS", "RAS"):
        raise ValueError(f"frame: LPS or RAS, got {frame!r}")
    if not mask.any():
        raise MeshError("the mask is empty: there is no surface to mesh")
    # only the mask's box is meshed; padding closes surfaces at the array's edge; a slight blur makes voxels that touch
    # only along an edge or a corner meet or part as a smooth surface would, so that no edge is shared by four
    # triangles (a non-manifold mesh)
    box = bounding_box(mask)
    assert box is not None  # the mask is not empty
    padded = ndimage.gaussian_filter(np.pad(mask[box].astype(np.float32), 2), sigma=BLUR_VOXELS)
    verts, tris, _, _ = marching_cubes(padded, 0.5)
    corner = np.array([s.start for s in box]) - 2
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.asarray(image.GetOrigin()) + ((verts + corner) * np.asarray(image.GetSpacing())) @ direction.T
    if frame == "RAS":
        points[:, :2] *= -1  # a half turn about z: orientation (and so the winding) is kept
    mesh = trimesh.Trimesh(points, tris, process=True)
    if smoothing:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=smoothing)
    if faces is not None and faces < len(mesh.faces):
        mesh = mesh.simplify_quadric_decimation(face_count=int(faces))
    if mesh.volume < 0:  # marching cubes winds by index order; a direction matrix with det > 0 turns it inside out
        mesh.invert()
    if not (mesh.is_watertight and mesh.is_winding_consistent):
        raise MeshError(
            f"the surface is not closed ({len(mesh.faces)} triangles, watertight {mesh.is_watertight}, "
            f"winding consistent {mesh.is_winding_consistent}); decimate less (more faces) or not at all"
        )
    return mesh


def write_stl(
    mask: np.ndarray,
    image: sitk.Image,
    path: Path,
    *,
    frame: Frame = "LPS",
    smoothing: int = SMOOTHING_ITERATIONS,
    faces: int | None = None,
) -> int:
    """A binary STL of ``mask``'s surface (:func:`surface_mesh`), written atomically; returns the triangle count."""
    mesh = surface_mesh(mask, image, frame=frame, smoothing=smoothing, faces=faces)
    save_stl(mesh, path, frame)
    return len(mesh.faces)


def save_stl(mesh, path: Path, frame: Frame) -> None:
    """``mesh`` as a binary STL, written atomically, its header naming the frame (``SPACE=LPS``, as 3D Slicer reads it)."""
    header = f"fam-skull mm SPACE={frame}".encode().ljust(80, b" ")  # binary STL: an 80-byte header, then the triangles
    atomic_write_bytes(path, header + mesh.export(file_type="stl")[80:])
