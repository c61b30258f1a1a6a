"""Where a defect family cuts: the skull's regions, how often seeded draws remove each, and the figure in docs.

    python -m data_prep.coverage --draws 1000 --output docs/defects/coverage.png
    python -m data_prep.coverage --draws 200 --shape 96 96 96 --against facial

Regions are named by where a bone voxel lies in the skull's bounding box (u: -1 to 1 along each LPS axis from the
box's centre): ``vault`` (u_z > 0.5), ``face`` (anterior and low: u_y < -0.35, u_z < -0.05; orbits, nasal
opening), ``base`` (u_z < -0.3, the rest of the low skull), and the side the voxel faces most: ``left`` and
``right`` temporal walls (u_x), ``frontal`` and ``occiput`` (u_y). A draw reaches a region when it removes at
least 1% of that region's bone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.box import bounding_box
from data_prep.defects import make_defect

REGIONS = ("vault", "left", "right", "frontal", "occiput", "face", "base")
REACHED = 0.01  # share of a region's bone a draw must remove to count as reaching it
TRAINING_TYPES = ("sphere", "cube", "bilateral", "frontoorbital", "parietotemporal")


def skull_regions(mask: np.ndarray) -> np.ndarray:
    """A label per voxel: 0 outside the skull, ``1 + REGIONS.index(name)`` on its bone."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("the skull mask is empty")
    lo = np.array([s.start for s in box], float)
    hi = np.array([s.stop - 1 for s in box], float)
    idx = np.argwhere(mask)
    u = (idx - (lo + hi) / 2) / np.maximum((hi - lo) / 2, 1)
    ux, uy, uz = u.T
    side = np.where(np.abs(ux) >= np.abs(uy), np.where(ux > 0, 1, 2), np.where(uy < 0, 3, 4))
    name = np.where(uz > 0.5, 0, np.where((uy < -0.35) & (uz < -0.05), 5, np.where(uz < -0.3, 6, side)))
    labels = np.zeros(mask.shape, np.uint8)
    labels[tuple(idx.T)] = name + 1
    return labels


def coverage(
    mask: np.ndarray, spacing: Sequence[float], kinds: Sequence[str], draws: int, seed: int = 0
) -> tuple[np.ndarray, dict[str, float], list[float]]:
    """``draws`` seeded defects (kind ``kinds[i % len(kinds)]``, seed ``seed + i``) on one skull: how many removed
    each voxel, the share of draws reaching each region, and each draw's removed fraction."""
    labels = skull_regions(mask)
    sizes = np.bincount(labels.ravel(), minlength=len(REGIONS) + 1)
    counts = np.zeros(mask.shape, np.int32)
    reached = np.zeros(len(REGIONS) + 1)
    fractions = []
    for i in range(draws):
        defect = make_defect(mask, spacing, kinds[i % len(kinds)], seed + i)
        removed = defect.region & mask
        counts += removed
        per_region = np.bincount(labels[removed], minlength=len(REGIONS) + 1)
        reached += per_region >= REACHED * np.maximum(sizes, 1)
        fractions.append(defect.removed_fraction)
    return counts, {name: float(reached[k + 1] / draws) for k, name in enumerate(REGIONS)}, fractions


def covering(
    mask: np.ndarray, spacing: Sequence[float], kind: str, target: str, draws: int, targets: int = 10, share: float = 0.5, seed: int = 0
) -> float:
    """The share of ``draws`` seeded ``kind`` defects (seeds ``seed + i``) that remove at least ``share`` of the bone
    of one of ``targets`` seeded ``target`` defects (seeds ``seed + i``): how often a training family reproduces a
    held-out type's defect."""
    removed = [make_defect(mask, spacing, target, seed + i).region & mask for i in range(targets)]
    hits = 0
    for i in range(draws):
        region = make_defect(mask, spacing, kind, seed + i).region
        hits += any(np.count_nonzero(region & r) >= share * np.count_nonzero(r) for r in removed)
    return hits / draws


def _views(mask: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """The value at the first bone voxel seen from the left, the front, above and behind (NaN where no bone)."""

    def first(axis: int, from_high: bool) -> np.ndarray:
        m = np.flip(mask, axis) if from_high else mask
        v = np.flip(values, axis) if from_high else values
        hit = m.any(axis=axis)
        depth = np.argmax(m, axis=axis)
        out = np.take_along_axis(v, np.expand_dims(depth, axis), axis).squeeze(axis).astype(float)
        out[~hit] = np.nan
        return out

    return {
        "from the left": first(0, True).T,  # +x is the patient's left: rows z, columns y (front at the left)
        "from the front": first(1, False).T,  # rows z, columns x
        "from above": first(2, True).T,  # rows y, columns x
        "from behind": first(1, True).T,
    }


def coverage_figure(
    mask: np.ndarray, spacing: Sequence[float], counts: np.ndarray, draws: int, shares: dict[str, dict[str, float]], path: Path
) -> None:
    """Four rendered views coloured by how often each surface voxel was removed, and the share of draws reaching
    each region per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = _views(mask, counts / draws)
    fig = plt.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.15, 1])
    aspects = {"from the left": spacing[2] / spacing[1], "from the front": spacing[2] / spacing[0], "from above": spacing[1] / spacing[0]}
    aspects["from behind"] = aspects["from the front"]
    vmax = float(np.nanmax([np.nanmax(v) for v in views.values()]))
    image = None
    for k, (title, view) in enumerate(views.items()):
        ax = fig.add_subplot(grid[0, k])
        image = ax.imshow(view, origin="lower", cmap="magma", vmin=0, vmax=vmax, aspect=aspects[title])
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    assert image is not None
    fig.colorbar(image, ax=fig.axes[:4], fraction=0.02, label="share of draws removing this bone")
    ax = fig.add_subplot(grid[1, :])
    width = 0.8 / len(shares)
    for j, (family, share) in enumerate(shares.items()):
        ax.bar(np.arange(len(REGIONS)) + (j - (len(shares) - 1) / 2) * width, [share[r] for r in REGIONS], width, label=family)
    ax.set_xticks(range(len(REGIONS)), [r if r in ("vault", "frontal", "occiput", "face", "base") else f"{r} temporal" for r in REGIONS])
    ax.set_ylabel(f"share of draws removing >= {REACHED:.0%} of the region")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right")
    fig.suptitle(f"Where defects fall on a synthetic skull: 'anywhere', {draws} seeded draws (top); each family by region (bottom)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from data_prep.phantom import synthetic_skull

    parser = argparse.ArgumentParser(description="where a defect family cuts: per-region shares and a figure")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--skull-seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("docs/defects/coverage.png"))
    parser.add_argument("--against", metavar="TYPE", help="only print how often anywhere removes half of a TYPE defect")
    args = parser.parse_args(argv)
    mask, spacing, _ = synthetic_skull(args.skull_seed, tuple(args.shape))
    if args.against:
        share = covering(mask, spacing, "anywhere", args.against, args.draws)
        print(f"{share:.3f} of {args.draws} anywhere draws remove at least half of one of 10 {args.against} defects' bone")
        return
    counts, anywhere, fractions = coverage(mask, spacing, ("anywhere",), args.draws)
    _, named, named_fractions = coverage(mask, spacing, TRAINING_TYPES, args.draws)
    shares = {"anywhere": anywhere, "training types (" + ", ".join(TRAINING_TYPES) + ")": named}
    coverage_figure(mask, spacing, counts, args.draws, shares, args.output)
    print(f"| region | anywhere | {', '.join(TRAINING_TYPES)} |\n|---|---|---|")
    for region in REGIONS:
        print(f"| {region} | {anywhere[region]:.3f} | {named[region]:.3f} |")
    for family, f in (("anywhere", fractions), ("training types", named_fractions)):
        print(f"{family}: removed fraction of the skull min {min(f):.3f}, median {np.median(f):.3f}, max {max(f):.3f}")
    print(f"figure: {args.output}")


if __name__ == "__main__":
    main()
