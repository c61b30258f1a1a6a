"""Seeded skull defects, placed anatomically in millimetres on canonical (LPS) masks.

implant = complete AND region; defective = complete AND NOT region. A draw that removes less than 0.5% or
more than 30% of the skull (35% for ``anywhere``) is redrawn. Types:

- ``sphere``, ``cube``: AutoImplant/SkullFix-like, on the top quarter, centred on a skull voxel so they
  cannot miss (the cube is a square column reaching up through the vertex);
- ``facial``: MONAI SkullRec-like anterior slab;
- ``bilateral``, ``frontoorbital``, ``parietotemporal``: SkullBreak-like warped ellipsoids;
- ``random``: a sphere of r ~ 28 +- 8 mm with 0-7 spheres of r ~ 16 +- 4 mm on its surface, blended
  smoothly (log-sum-exp union) and elastically deformed;
- ``anywhere``: one to three defects (60/25/15%) anywhere on the skull's outer surface (a uniformly random
  direction from the skull's centre, the outermost bone along it: vault, temporal walls, occiput, frontal bone,
  orbits and face, the skull base), each a hole (half the draws: a warped elliptic column along that direction,
  through the bone, radius 10-45 mm log-uniform: trephine holes to large craniectomies), a flap (a quarter:
  everything outward of a warped cut surface 8-16 mm under the surface point, within 80 mm of it) or an en-bloc
  resection (a quarter: a block with straight walls across the surface, 30-110 mm wide, its floor 15-45 mm deep,
  which takes a thick wall or a face to depth where it lands on one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data_prep.box import bounding_box

DEFECT_TYPES = ("sphere", "cube", "facial", "bilateral", "frontoorbital", "parietotemporal", "random", "anywhere")
MIN_REMOVED, MAX_REMOVED = 0.005, 0.30
LIMITS = {"anywhere": (0.005, 0.35)}  # removed fraction of the skull; other types: (MIN_REMOVED, MAX_REMOVED)


def limits(kind: str) -> tuple[float, float]:
    """The removed fraction of the skull a ``kind`` defect must lie in."""
    return LIMITS.get(kind, (MIN_REMOVED, MAX_REMOVED))


class DefectError(ValueError):
    """No acceptable defect could be drawn."""


@dataclass(frozen=True)
class Defect:
    region: np.ndarray  # bool, the removed volume (covers more than bone)
    removed_fraction: float
    attempts: int


class _Frame:
    """The skull's extent in mm (voxel centres), for placing defects."""

    def __init__(self, mask: np.ndarray, spacing) -> None:
        self.mask, self.spacing = mask, np.asarray(spacing, float)
        box = bounding_box(mask)
        assert box is not None  # make_defect refuses an empty skull before framing it
        self.lo = np.array([s.start for s in box]) * self.spacing
        self.hi = np.array([s.stop - 1 for s in box]) * self.spacing
        self.size = self.hi - self.lo
        self.centre = (self.lo + self.hi) / 2

    def skull_point(self, rng: np.random.Generator, z_from: float) -> np.ndarray:
        """A random skull voxel (mm) with z above ``z_from`` (a fraction of the height)."""
        k0 = int(np.ceil((self.lo[2] + z_from * self.size[2]) / self.spacing[2]))
        idx = np.argwhere(self.mask[:, :, k0:])
        pick = idx[rng.integers(len(idx))] + np.array([0, 0, k0])
        return pick * self.spacing

    def surface_point(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """The outermost skull voxel (mm) along a uniformly random direction from the skull's centre, and that
        direction; None when the ray meets no bone (a scan cut off on that side)."""
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        step = float(self.spacing.min()) / 2
        t = np.arange(0.0, float(np.linalg.norm(self.size)) / 2 + step, step)
        idx = np.rint((self.centre + t[:, None] * d) / self.spacing).astype(int)
        inside = np.all((idx >= 0) & (idx < np.array(self.mask.shape)), axis=1)
        idx = idx[inside]
        hits = np.flatnonzero(self.mask[idx[:, 0], idx[:, 1], idx[:, 2]])
        return (idx[hits[-1]] * self.spacing, d) if len(hits) else None

    def box(self, centre: np.ndarray, half: Sequence[float] | np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]]:
        """Slices of the voxels within ``half`` mm of ``centre`` and their sparse mm coordinates minus centre."""
        shape = self.mask.shape
        slices, coords = [], []
        for axis in range(3):
            a = max(int(np.floor((centre[axis] - half[axis]) / self.spacing[axis])), 0)
            b = min(int(np.ceil((centre[axis] + half[axis]) / self.spacing[axis])) + 1, shape[axis])
            slices.append(slice(a, max(a, b)))
            c = np.arange(a, max(a, b), dtype=np.float32) * self.spacing[axis] - centre[axis]
            coords.append(c.reshape([-1 if i == axis else 1 for i in range(3)]))
        return tuple(slices), coords


def _waves(coords, rng, amplitude: float, wavelength: float, n: int = 3):
    """A smooth random scalar field (sum of plane waves) over sparse coordinates."""
    field = 0.0
    for _ in range(n):
        d = rng.normal(size=3)
        d *= 2 * np.pi / wavelength / np.linalg.norm(d)
        field = field + amplitude / np.sqrt(n) * np.sin(
            float(d[0]) * coords[0] + float(d[1]) * coords[1] + float(d[2]) * coords[2] + rng.uniform(0, 2 * np.pi)
        )
    return field


def _ellipsoid(frame, rng, centre, axes):
    half = np.asarray(axes) * 1.4
    sl, c = frame.box(centre, half)
    f = sum((ci / float(a)) ** 2 for ci, a in zip(c, axes)) + _waves(c, rng, 0.25, 45.0)
    return sl, f < 1


def _tangents(n: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to ``n`` and to each other, turned by a random angle."""
    e1 = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    angle = rng.uniform(0, np.pi)
    return np.cos(angle) * e1 + np.sin(angle) * e2, -np.sin(angle) * e1 + np.cos(angle) * e2


def _dot(coords, v) -> np.ndarray:
    return float(v[0]) * coords[0] + float(v[1]) * coords[1] + float(v[2]) * coords[2]


def _anywhere(frame: _Frame, rng, scale: float) -> tuple[tuple[slice, ...], np.ndarray]:
    region = np.zeros(frame.mask.shape, bool)
    for _ in range(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])):
        found = frame.surface_point(rng)
        if found is None:
            continue
        point, n = found
        shape = rng.random()
        if shape < 0.5:  # a hole through the bone
            r = float(np.exp(rng.uniform(np.log(10), np.log(45)))) * scale
            depth = 20.0 * scale + r / 2
            sl, c = frame.box(point, [r * 1.5 + depth] * 3)
            e1, e2 = _tangents(n, rng)
            ratio = rng.uniform(0.6, 1.0)
            along = _dot(c, n)
            f = (_dot(c, e1) / r) ** 2 + (_dot(c, e2) / (r * ratio)) ** 2 + _waves(c, rng, 0.3, 3 * r)
            local = (f < 1) & (np.abs(along) < depth)
        elif shape < 0.75:  # a flap: everything outward of a warped cut surface
            h, reach = rng.uniform(8, 16) * scale, 80.0 * scale
            sl, c = frame.box(point, [reach] * 3)
            local = (_dot(c, n) + _waves(c, rng, 0.2 * h, 80.0) > -h) & (sum(ci * ci for ci in c) < reach * reach)
        else:  # an en-bloc resection: a block of bone, walls across the surface, its floor 15-45 mm deep
            a = float(np.exp(rng.uniform(np.log(15), np.log(55)))) * scale
            b, depth = a * rng.uniform(0.5, 1.0), rng.uniform(15, 45) * scale
            sl, c = frame.box(point, [max(a, b, depth) * 1.5] * 3)
            e1, e2 = _tangents(n, rng)
            walls = np.maximum(np.abs(_dot(c, e1)) / a, np.abs(_dot(c, e2)) / b) + _waves(c, rng, 0.05, 60.0)
            local = (walls < 1) & (_dot(c, n) + _waves(c, rng, 0.1 * depth, 60.0) > -depth)
        region[sl] |= local
    return (slice(None),) * 3, region


def _draw(kind: str, frame: _Frame, rng) -> tuple[tuple[slice, ...], np.ndarray]:
    size, lo, hi, mid = frame.size, frame.lo, frame.hi, frame.centre
    scale = float(size[0]) / 145.0  # defects scale with the head's width
    if kind == "anywhere":
        return _anywhere(frame, rng, scale)
    if kind == "sphere":
        centre, r = frame.skull_point(rng, 0.75), rng.uniform(14, 24) * scale
        sl, c = frame.box(centre, [r] * 3)
        return sl, sum(ci * ci for ci in c) < r * r
    if kind == "cube":
        centre, a = frame.skull_point(rng, 0.75), rng.uniform(25, 40) * scale
        top = hi[2] - centre[2] + frame.spacing[2]
        sl, c = frame.box(centre + np.array([0, 0, (top - a / 2) / 2]), [a / 2, a / 2, (top + a / 2) / 2])
        zc = c[2] + (top - a / 2) / 2
        return sl, (np.abs(c[0]) < a / 2) & (np.abs(c[1]) < a / 2) & (zc >= -a / 2) & (zc <= top)
    if kind == "facial":
        depth, height, width = rng.uniform(25, 40) * scale, rng.uniform(30, 50) * scale, rng.uniform(35, 55) * scale
        centre = np.array([mid[0], lo[1] + depth / 2, lo[2] + rng.uniform(0.3, 0.45) * size[2]])
        sl, c = frame.box(centre, [width, depth / 2 + frame.spacing[1], height / 2])
        return sl, (np.abs(c[0]) < width) & (c[1] < depth / 2) & (np.abs(c[2]) < height / 2)
    if kind == "bilateral":
        centre = np.array([mid[0], mid[1] + rng.uniform(-10, 10), hi[2] - rng.uniform(5, 15)])
        axes = [0.45 * size[0] * rng.uniform(0.9, 1.1), rng.uniform(25, 35) * scale, rng.uniform(25, 35) * scale]
        return _ellipsoid(frame, rng, centre, axes)
    if kind == "frontoorbital":
        side = rng.choice([-1, 1])
        centre = np.array([mid[0] + side * rng.uniform(5, 20), lo[1] + rng.uniform(5, 15), lo[2] + rng.uniform(0.45, 0.55) * size[2]])
        return _ellipsoid(frame, rng, centre, rng.uniform([30, 25, 25], [40, 35, 35]) * scale)
    if kind == "parietotemporal":
        side = rng.choice([0, 1])
        x = lo[0] + 5 if side == 0 else hi[0] - 5
        centre = np.array([x, mid[1] + rng.uniform(-15, 15), lo[2] + rng.uniform(0.55, 0.65) * size[2]])
        return _ellipsoid(frame, rng, centre, rng.uniform([25, 35, 30], [35, 45, 40]) * scale)
    if kind == "random":
        centre = frame.skull_point(rng, 0.4)
        r0 = float(np.clip(rng.normal(28, 8), 12, 44)) * scale
        spheres = [(np.zeros(3), r0)]
        for _ in range(rng.integers(0, 8)):
            d = rng.normal(size=3)
            spheres.append((d / np.linalg.norm(d) * r0, float(np.clip(rng.normal(16, 4), 8, 24)) * scale))
        reach = float(max(np.linalg.norm(c) + r for c, r in spheres)) + 6
        sl, c = frame.box(centre, [reach] * 3)
        warped = [ci + _waves(c, rng, 4.0, 60.0) for ci in c]  # elastic deformation of the coordinates
        k = 0.3  # 1/mm: sharpness of the smooth union
        soft = sum(np.exp(k * (r - np.sqrt(sum((wi - float(ci)) ** 2 for wi, ci in zip(warped, cen))))) for cen, r in spheres)
        return sl, soft > 1
    raise ValueError(f"unknown defect type {kind!r}; choose from {', '.join(DEFECT_TYPES)}")


def make_defect(complete: np.ndarray, spacing: Sequence[float] | np.ndarray, kind: str, seed: int, max_attempts: int = 25) -> Defect:
    """Draw a ``kind`` defect on a canonical (LPS, x-y-z) skull mask with ``spacing`` in mm.

    Raises:
        ValueError: unknown type. DefectError: no draw removed 0.5-30% (``anywhere``: 35%) of the skull in
        ``max_attempts``.
    """
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {kind!r}; choose from {', '.join(DEFECT_TYPES)}")
    if not complete.any():
        raise DefectError("the skull mask is empty: there is no bone to cut a defect from")
    frame = _Frame(complete, spacing)
    rng = np.random.default_rng(seed)
    total = int(complete.sum())
    low, high = limits(kind)
    fractions = []
    for attempt in range(1, max_attempts + 1):
        sl, local = _draw(kind, frame, rng)
        removed = int(np.count_nonzero(local & complete[sl])) / total
        fractions.append(removed)
        if low <= removed <= high:
            region = np.zeros(complete.shape, bool)
            region[sl] = local
            return Defect(region, removed, attempt)
    raise DefectError(
        f"no {kind} defect removed {low:.1%}-{high:.0%} of the skull in {max_attempts} draws "
        f"(removed {min(fractions):.2%}-{max(fractions):.2%}); is the mask a whole skull?"
    )
