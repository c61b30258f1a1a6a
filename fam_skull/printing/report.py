"""What a printing lab asks of an implant before it prints: its size, how thick it is, that it does not overlap
the skull, how large the seam to the rim is; and a picture of it (three slices and a rendered view).

Thickness: at the implant's medial ridge (the local maxima of its distance transform) a plate is twice its distance
to the outside, less one voxel (a one-voxel plate is one voxel thick): right to within one voxel. The seam: the
implant and the defective skull closed with a ball of ``SEAM_MM``; the voxels the closing adds next to the implant
are the seam, and its largest width is measured like the thickness (widths up to ``2 * SEAM_MM`` are seen; one
that reaches it is reported as at least that).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from data_prep.box import bounding_box
from fam_skull.common.figures import pyplot, save_figure

SEAM_MM = 5.0


def _box(mask: np.ndarray, spacing: np.ndarray, margin_mm: float) -> tuple[slice, ...]:
    box = bounding_box(mask, margin=int(np.ceil(margin_mm / spacing.min())))
    assert box is not None  # callers pass a non-empty implant
    return box


def thickness_mm(implant: np.ndarray, spacing) -> np.ndarray:
    """The plate thickness (mm) at each voxel of the implant's medial ridge (module docstring)."""
    spacing = np.asarray(spacing, float)
    box = _box(implant, spacing, spacing.max())
    inside = np.pad(implant[box], 1)
    distance = ndimage.distance_transform_edt(inside, sampling=spacing)
    ridge = inside & (distance >= ndimage.maximum_filter(distance, size=3))
    return 2 * distance[ridge] - spacing.min()


def seam_mm(implant: np.ndarray, defective: np.ndarray, spacing) -> tuple[float, bool]:
    """The largest width (mm) of the seam between the implant and the skull, and whether it reaches the measurable
    limit (module docstring)."""
    spacing = np.asarray(spacing, float)
    box = _box(implant, spacing, 3 * SEAM_MM)
    solid = defective[box] | implant[box]
    grown = ndimage.distance_transform_edt(~solid, sampling=spacing) <= SEAM_MM
    closed = ndimage.distance_transform_edt(grown, sampling=spacing) > SEAM_MM
    near = ndimage.distance_transform_edt(~implant[box], sampling=spacing) <= SEAM_MM
    seam = closed & ~solid & near
    if not seam.any():
        return 0.0, False
    width = 2 * float(ndimage.distance_transform_edt(~solid, sampling=spacing)[seam].max()) - spacing.min()
    return width, bool(width >= 2 * SEAM_MM - spacing.max())


def implant_report(implant: np.ndarray, defective: np.ndarray, spacing, mesh: Any) -> dict:
    """The implant's measures (module docstring) from its mask on the scan's grid and its mesh (mm)."""
    spacing = np.asarray(spacing, float)
    voxel_ml = float(spacing.prod()) / 1000
    if mesh is None or not implant.any():
        return {"implant": False, "volume_ml": 0.0, "overlap_ml": 0.0}
    thick = thickness_mm(implant, spacing)
    gap, at_limit = seam_mm(implant, defective, spacing)
    lo, hi = mesh.bounds
    return {
        "implant": True,
        "volume_ml": float(implant.sum() * voxel_ml),
        "mesh_volume_ml": float(mesh.volume / 1000),
        "surface_area_cm2": float(mesh.area / 100),
        "triangles": int(len(mesh.faces)),
        "watertight": bool(mesh.is_watertight),
        "thickness_mm": {"min": float(thick.min()), "p05": float(np.percentile(thick, 5)), "mean": float(thick.mean())},
        "overlap_ml": float((implant & defective).sum() * voxel_ml),
        "largest_seam_mm": gap,
        "seam_at_least": at_limit,
        "bounding_box_mm": {"min": lo.tolist(), "max": hi.tolist(), "size": (hi - lo).tolist()},
    }


def _render(ax, mesh, colour, alpha: float, light: np.ndarray) -> None:
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    shade = 0.35 + 0.65 * np.clip(mesh.face_normals @ light, 0, 1)
    faces = Poly3DCollection(mesh.triangles, linewidths=0, alpha=alpha)
    faces.set_facecolor(np.asarray(colour)[None, :] * shade[:, None])
    ax.add_collection3d(faces)


def implant_figure(defective: np.ndarray, implant: np.ndarray, spacing, skull_mesh: Any, implant_mesh: Any, path, title: str) -> None:
    """Three orthogonal slices through the implant's centre (skull grey, implant red) and a rendered view of the
    skull and the implant meshes, seen from the implant's side."""
    plt = pyplot()
    spacing = np.asarray(spacing, float)
    centre = np.argwhere(implant).mean(0).round().astype(int) if implant.any() else np.array(implant.shape) // 2
    fig = plt.figure(figsize=(18, 5.2))
    grid = fig.add_gridspec(1, 4, width_ratios=(1, 1, 1, 1.5))
    names = ("sagittal (x)", "coronal (y)", "axial (z)")
    for axis in range(3):
        ax = fig.add_subplot(grid[0, axis])
        skull, piece = np.take(defective, int(centre[axis]), axis=axis).T, np.take(implant, int(centre[axis]), axis=axis).T
        rgb = np.ones(skull.shape + (3,))
        rgb[skull] = (0.55, 0.55, 0.55)
        rgb[piece] = (0.85, 0.1, 0.1)
        others = [i for i in range(3) if i != axis]
        ax.imshow(rgb, origin="lower", aspect=spacing[others[1]] / spacing[others[0]], interpolation="nearest")
        ax.set_title(f"{names[axis]} slice {centre[axis]}", fontsize=10)
        ax.set_xlabel("xyz"[others[0]] + " (voxels)", fontsize=8)
        ax.set_ylabel("xyz"[others[1]] + " (voxels)", fontsize=8)
        ax.tick_params(labelsize=7)
    ax3 = fig.add_subplot(grid[0, 3], projection="3d")
    view = implant_mesh.center_mass - skull_mesh.center_mass if implant_mesh is not None else np.array([0.0, -1.0, 0.3])
    view = view / (np.linalg.norm(view) + 1e-9)
    _render(ax3, skull_mesh, (0.8, 0.8, 0.78), 0.35 if implant_mesh is not None else 1.0, view)
    if implant_mesh is not None:
        _render(ax3, implant_mesh, (0.9, 0.15, 0.1), 1.0, view)
    lo, hi = skull_mesh.bounds
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2
    ax3.set(xlim=(mid[0] - half, mid[0] + half), ylim=(mid[1] - half, mid[1] + half), zlim=(mid[2] - half, mid[2] + half))
    ax3.view_init(elev=float(np.degrees(np.arcsin(np.clip(view[2], -1, 1)))), azim=float(np.degrees(np.arctan2(view[1], view[0]))))
    ax3.set_axis_off()
    ax3.set_title("skull (grey) and implant (red)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(fig, path)
