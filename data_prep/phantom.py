"""Synthetic skulls defined in millimetres and rasterized last, so one seed gives the same anatomy on any grid.

Coordinates are LPS (+x left, +y posterior, +z superior) around the field of view's centre. The skull is an
ellipsoidal vault shell (about 72 x 92 x 70 mm semi-axes, +-4%) whose thickness is ~6.5 mm, thicker at the
vertex and occiput and ~4 mm temporally, and never under 1.6 voxels along the surface normal so coarse grids
stay closed; a stepped skull floor with a foramen magnum; a facial shell with orbits and a nasal opening; an
optional mandible arc; a smooth random deformation (~3 mm, ~90 mm wavelength) and a small affine jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIELD_OF_VIEW = (200.0, 230.0, 200.0)


@dataclass(frozen=True)
class Anatomy:
    """The random draws of one skull (independent of the grid)."""

    axes: np.ndarray
    rotation: np.ndarray
    shift: np.ndarray
    wave_dirs: np.ndarray
    wave_amps: np.ndarray
    wave_phases: np.ndarray
    thickness: float

    @classmethod
    def draw(cls, seed: int) -> Anatomy:
        rng = np.random.default_rng(seed)
        axes = np.array([72.0, 92.0, 70.0]) * (1 + rng.uniform(-0.04, 0.04, 3))
        angles = np.deg2rad(rng.uniform(-3, 3, 3))
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            c, s = np.cos(angle), np.sin(angle)
            i, j = [k for k in range(3) if k != axis]
            r = np.eye(3)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            rotation = rotation @ r
        dirs = rng.normal(size=(6, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        amps = rng.normal(size=(6, 3)) * 3.0 / np.sqrt(6)
        return cls(axes, rotation, rng.uniform(-3, 3, 3), dirs, amps, rng.uniform(0, 2 * np.pi, 6), 6.5 + rng.uniform(-0.3, 0.3))


def grid_coordinates(
    shape: tuple[int, int, int], fov: tuple[float, float, float] = FIELD_OF_VIEW
) -> tuple[tuple[np.ndarray, ...], tuple[float, ...], tuple[float, ...]]:
    """Voxel-centre coordinates (mm) as three broadcastable axes, the spacing and the origin of a grid over ``fov``."""
    spacing = tuple(f / n for f, n in zip(fov, shape))
    origin = tuple(-f / 2 + s / 2 for f, s in zip(fov, spacing))
    axes = [o + s * np.arange(n, dtype=np.float32) for o, s, n in zip(origin, spacing, shape)]
    return np.meshgrid(*axes, indexing="ij", sparse=True), spacing, origin


def _shell(q, centre, axes, thickness, spacing, min_voxels=1.6):
    """Voxels within ``thickness`` inside an ellipsoid's surface (thickness may vary per voxel)."""
    rel = [qi - ci for qi, ci in zip(q, centre)]
    rho = np.sqrt(sum((r / a) ** 2 for r, a in zip(rel, axes)))
    norm = np.sqrt(sum(r * r for r in rel)) + 1e-6
    depth = (1 - rho) * norm / np.maximum(rho, 1e-6)
    grad = [r / a**2 for r, a in zip(rel, axes)]
    gnorm = np.sqrt(sum(g * g for g in grad)) + 1e-12
    # a voxel is widest along the normal by sum_i |n_i| s_i; keep the shell at least 1.6 such widths
    floor = min_voxels * sum(np.abs(g) / gnorm * s for g, s in zip(grad, spacing))
    return (depth >= 0) & (depth <= np.maximum(thickness, floor)), rho, rel, norm


def synthetic_skull(
    seed: int, shape: tuple[int, int, int] = (64, 64, 32), fov: tuple[float, float, float] = FIELD_OF_VIEW, mandible: bool = False
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """A binary skull on an (x, y, z) grid.

    Returns:
        (mask, spacing_mm, origin_mm) of the grid.
    """
    anatomy = Anatomy.draw(seed)
    (x, y, z), spacing, origin = grid_coordinates(shape, fov)
    # inverse affine jitter, then a smooth deformation (a sum of plane waves, ~90 mm wavelength)
    # python floats keep the arrays float32 (numpy scalars would promote them to float64)
    p = [x - float(anatomy.shift[0]), y - float(anatomy.shift[1]), z - float(anatomy.shift[2])]
    r = anatomy.rotation.T.tolist()
    q = [r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2] for i in range(3)]
    k = 2 * np.pi / 90.0
    phase = [
        np.sin(k * d[0] * q[0] + k * d[1] * q[1] + k * d[2] * q[2] + ph)
        for d, ph in zip(anatomy.wave_dirs.tolist(), anatomy.wave_phases.tolist())
    ]
    amps = anatomy.wave_amps.tolist()
    q = [q[i] - sum(a[i] * w for a, w in zip(amps, phase)) for i in range(3)]
    qx, qy, qz = q

    vault_c = (0.0, 5.0, 10.0)
    rel = [qx - vault_c[0], qy - vault_c[1], qz - vault_c[2]]
    norm = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) + 1e-6
    u = [ri / norm for ri in rel]
    thickness = (
        float(anatomy.thickness) + 1.5 * np.clip(u[2], 0, None) ** 4 + 1.5 * np.clip(u[1], 0, None) ** 4 - 2.5 * u[0] ** 4 * (1 - u[2] ** 2)
    )
    vault, rho, rel, _ = _shell(q, vault_c, anatomy.axes.tolist(), thickness, spacing)

    # stepped floor: anterior, middle and posterior cranial fossae, joined by vertical steps
    floor_z = np.where(rel[1] < -25, -8.0, np.where(rel[1] < 15, -22.0, -34.0))
    vault &= rel[2] >= floor_z - 5
    inside = rho < 1
    floor = inside & (rel[2] <= floor_z) & (rel[2] >= floor_z - 5)
    for step_y, top, bottom in ((-25.0, -8.0, -27.0), (15.0, -22.0, -39.0)):
        floor |= inside & (np.abs(rel[1] - step_y) <= 2.5) & (rel[2] <= top) & (rel[2] >= bottom)
    floor &= ~((rel[0] ** 2 + (rel[1] - 30.0) ** 2 < 15.0**2) & (rel[2] < -25))  # foramen magnum

    face_c = (0.0, -40.0, -20.0)
    face, _, frel, _ = _shell(q, face_c, (55.0, 50.0, 50.0), 4.0, spacing)
    face &= (frel[1] < 0) & (qz < vault_c[2] - 8) & (rho >= 0.8)
    for side in (-1, 1):
        face &= (qx - side * 28.0) ** 2 + (qy + 82.0) ** 2 + (qz + 15.0) ** 2 >= 16.0**2
    face &= ((qx / 11.0) ** 2 + ((qy + 88.0) / 22.0) ** 2 + ((qz + 45.0) / 16.0) ** 2) >= 1

    mask = vault | floor | face
    if mandible:
        radial = np.sqrt(qx**2 + (qy + 30.0) ** 2)
        mask |= (np.sqrt((radial - 45.0) ** 2 + (qz + 80.0) ** 2) < 7.0) & (qy < -30.0)
    return mask, spacing, origin


def synthetic_ct(
    seed: int, shape: tuple[int, int, int] = (96, 96, 64), fov: tuple[float, float, float] = FIELD_OF_VIEW, table: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """A head CT (int16 HU) around :func:`synthetic_skull`, for the skull extraction: air (-1000), a head of soft
    tissue (40) with a neck down to the edge of the field of view, brain (30), bone (1000 +- 150), noise (sd 20),
    a metal screw head (3500) on the vertex, bright specks in the air, and (``table``) a 10 mm scanner table of
    bone-like density (400), 14 mm thick, pressed against the occiput (touching the bone, the scalp squeezed away)
    and larger than the skull.

    Returns:
        (hu, skull, spacing_mm, origin_mm): the skull is the truth the extraction should find (metal excluded).
    """
    from scipy import ndimage

    skull, spacing, origin = synthetic_skull(seed, shape, fov)
    (x, y, z), _, _ = grid_coordinates(shape, fov)
    rng = np.random.default_rng(seed + 7919)
    idx = np.argwhere(skull)
    lo, hi = idx.min(0) * spacing + origin, idx.max(0) * spacing + origin
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + 7.0
    head = ((x - centre[0]) / half[0]) ** 2 + ((y - centre[1]) / half[1]) ** 2 + ((z - centre[2]) / half[2]) ** 2 <= 1
    head |= ndimage.distance_transform_edt(~skull, sampling=spacing) <= 6.0
    head |= ((x - centre[0]) / 45.0) ** 2 + ((y - centre[1] - 20.0) / 40.0) ** 2 <= 1  # the neck, as tall as the scan
    hu = np.full(shape, -1000.0, np.float32)
    hu[head] = 40.0
    hu[ndimage.binary_erosion(head, iterations=3) & ~skull] = 30.0
    hu[skull] = rng.normal(1000.0, 150.0, int(skull.sum())).clip(400, 1800)
    if table:
        back = float(np.max(np.where(skull, y, -np.inf)))  # the skull's most posterior point (LPS: +y posterior)
        hu[np.broadcast_to((y >= back - 1.0) & (y <= back + 13.0), shape) & ~skull] = 400.0
    top = idx[np.argmax(idx[:, 2])] * spacing + origin
    screw = (x - top[0]) ** 2 + (y - top[1]) ** 2 + (z - top[2] - 2.0) ** 2 <= 3.0**2
    hu[screw] = 3500.0
    air = np.argwhere(hu < -900)
    specks = air[rng.choice(len(air), 40, replace=False)]
    hu[tuple(specks.T)] = 300.0
    hu += rng.normal(0.0, 20.0, shape).astype(np.float32)
    return hu.round().astype(np.int16), skull & ~screw, spacing, origin
