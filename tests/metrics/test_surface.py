"""Metrics against medpy itself (the AutoImplant evaluation) and hand-computed geometries."""

import numpy as np
import pytest
from medpy.metric import binary
from scipy import ndimage

from fam_skull.metrics import boundary_dice, compute_metrics


def blob(rng, shape, n=4, touch=False):
    """A seeded random shape: a union of smoothed random balls, optionally cut by the array border."""
    field = np.zeros(shape)
    for _ in range(n):
        c = rng.uniform(0, shape) if touch else rng.uniform(np.array(shape) * 0.25, np.array(shape) * 0.75)
        r = rng.uniform(3, 8)
        idx = np.indices(shape)
        field += np.exp(-sum((i - ci) ** 2 for i, ci in zip(idx, c)) / r**2)
    return field > 0.4


CASES = [
    (seed, spacing, touch) for seed in range(4) for spacing in [(1, 1, 1), (0.45, 0.45, 1.2), (2.0, 0.7, 3.1)] for touch in (False, True)
]


@pytest.mark.parametrize("seed, spacing, touch", CASES)
def test_agrees_with_medpy(seed, spacing, touch):
    rng = np.random.default_rng(seed)
    shape = (30, 26, 22)
    a, b = blob(rng, shape, touch=touch), blob(rng, shape, touch=touch)
    if touch:
        assert a[0].any() or a[-1].any() or a[:, 0].any() or a[:, :, -1].any() or b[0].any() or b[:, -1].any()
    got = compute_metrics(a, b, spacing)
    assert got["dsc"] == pytest.approx(binary.dc(a, b), abs=1e-12)
    assert got["hd"] == pytest.approx(binary.hd(a, b, voxelspacing=spacing), abs=1e-9)
    assert got["hd95"] == pytest.approx(binary.hd95(a, b, voxelspacing=spacing), abs=1e-9)
    assert got["assd"] == pytest.approx(binary.assd(a, b, voxelspacing=spacing), abs=1e-9)
    assert got["empty"] is None


def test_hand_computed_geometry():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[2, 5, 5] = True
    b[5, 5, 5] = True  # 3 voxels apart along x at 2 mm -> 6 mm
    m = compute_metrics(a, b, (2.0, 1.0, 1.0))
    assert (m["dsc"], m["hd"], m["hd95"], m["assd"]) == (0.0, 6.0, 6.0, 6.0)
    # a 3x3x3 cube and the same cube grown by one voxel along +x: HD is one voxel (1 mm)
    c = np.zeros((10, 10, 10), bool)
    c[3:6, 3:6, 3:6] = True
    d = c.copy()
    d[6, 3:6, 3:6] = True
    m = compute_metrics(c, d)
    assert m["hd"] == 1.0 and m["dsc"] == pytest.approx(2 * 27 / (27 + 36))


def test_pooled_hd95_differs_from_per_direction_max():
    rng = np.random.default_rng(11)
    a, b = blob(rng, (30, 30, 30), n=6), blob(rng, (30, 30, 30), n=2)
    m = compute_metrics(a, b)
    from fam_skull.metrics import surface_distances

    ab, ba = surface_distances(a, b)
    per_direction_max = max(np.percentile(ab, 95), np.percentile(ba, 95))
    assert m["hd95"] == pytest.approx(binary.hd95(a, b), abs=1e-9)
    assert m["hd95"] < per_direction_max
    # MONAI's HD95 is that per-direction maximum (of its own surface definition), not medpy's pooled value
    import torch
    from monai.metrics import compute_hausdorff_distance

    monai = compute_hausdorff_distance(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], percentile=95).item()
    assert monai > m["hd95"] + 0.1


def test_empty_policy_never_flatters():
    a = np.zeros((10, 12, 14), bool)
    b = a.copy()
    b[4:6, 4:6, 4:6] = True
    miss = compute_metrics(a, b, (1.0, 2.0, 3.0))
    diagonal = np.linalg.norm([10, 24, 42])
    assert miss["empty"] == "prediction" and miss["dsc"] == 0.0
    assert miss["hd"] == miss["hd95"] == miss["assd"] == pytest.approx(diagonal)
    hit = compute_metrics(b, b, (1.0, 2.0, 3.0))
    assert np.mean([miss["hd95"], hit["hd95"]]) > hit["hd95"]
    assert compute_metrics(a, b, empty="inf")["hd"] == np.inf
    assert compute_metrics(b, a)["empty"] == "reference"
    both = compute_metrics(a, a)
    assert (both["empty"], both["dsc"], both["hd"]) == ("both", 1.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(a, b[:-1])


def test_boundary_dice_matches_a_full_distance_transform():
    rng = np.random.default_rng(5)
    spacing = (0.8, 1.1, 1.6)
    skull = blob(rng, (40, 36, 30), n=6)
    region = blob(rng, (40, 36, 30), n=2)
    defective = skull & ~region
    gt, pred = skull & region, blob(rng, (40, 36, 30), n=2) & skull
    near = ndimage.distance_transform_edt(~defective, sampling=spacing) <= 4.0
    expected = binary.dc(pred & near, gt & near)
    assert boundary_dice(pred, gt, defective, spacing, 4.0) == pytest.approx(expected, abs=1e-12)
    assert compute_metrics(pred, gt, spacing, defective=defective, boundary_mm=4.0)["bdsc"] == pytest.approx(expected, abs=1e-12)


def test_boundary_dice_far_from_the_skull():
    implant = np.zeros((30, 30, 30), bool)
    implant[2:5, 2:5, 2:5] = True
    skull = np.zeros_like(implant)
    skull[25:, 25:, 25:] = True  # more than 10 mm away: no voxel of either implant is near the skull
    assert boundary_dice(implant, implant, skull, (1.0, 1.0, 1.0), 10.0) == 1.0
    near_gt = np.zeros_like(implant)
    near_gt[20:24, 20:24, 20:24] = True
    assert boundary_dice(implant, near_gt, skull, (1.0, 1.0, 1.0), 10.0) == 0.0
