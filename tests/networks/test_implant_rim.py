"""Implants only where bone is missing: components meeting the defective skull are kept, pieces floating in the
cranial cavity or outside the head are dropped, and so are small pieces far from the implant, on constructed skulls
and implants whose pieces are known."""

import numpy as np

from fam_skull.networks.implant import drop_strays, rim_implant

SPACING = (1.0, 1.0, 2.0)


def _shell():
    idx = np.indices((70, 70, 30)).astype(float)  # the wall crosses y = 8-12 at x = 35, z = 15
    r = np.sqrt((idx[0] - 35) ** 2 + (idx[1] - 35) ** 2 + ((idx[2] - 15) * 2) ** 2)
    return (r > 22) & (r <= 27), idx


def test_a_rim_touching_piece_is_kept_and_floating_ones_dropped():
    shell, idx = _shell()
    gap = shell & (idx[2] >= 25)  # the top of the vault is missing
    defective = shell & ~gap
    cavity = (np.abs(idx[0] - 35) <= 3) & (np.abs(idx[1] - 35) <= 3) & (np.abs(idx[2] - 15) <= 2)  # mid-cavity
    outside = (np.abs(idx[0] - 35) <= 2) & (np.abs(idx[1] - 5.5) <= 0.5) & (np.abs(idx[2] - 15) <= 1)  # 2-3 mm off the wall
    far = (np.abs(idx[0] - 35) <= 2) & (idx[1] <= 2) & (np.abs(idx[2] - 15) <= 1)  # 6 mm and more off it
    prediction = gap | cavity | far
    kept = rim_implant(prediction, defective, SPACING, 3.0)
    np.testing.assert_array_equal(kept, gap)
    assert not (outside & shell).any()
    np.testing.assert_array_equal(rim_implant(gap | outside, defective, SPACING, 3.0), gap | outside)  # within reach
    np.testing.assert_array_equal(rim_implant(prediction, defective, SPACING, None), prediction)


def test_a_healthy_skull_keeps_no_implant_from_a_floating_piece():
    shell, idx = _shell()
    cavity = (np.abs(idx[0] - 35) <= 4) & (np.abs(idx[1] - 35) <= 4) & (np.abs(idx[2] - 15) <= 3)
    assert not rim_implant(cavity, shell, SPACING, 3.0).any()
    assert not rim_implant(np.zeros_like(shell), shell, SPACING, 3.0).any()


def test_a_piece_touching_the_skull_is_kept_when_voxels_are_coarser_than_the_reach():
    # the study's 3.1 x 3.6 x 6.3 mm voxels: an implant voxel next to bone is 3.1 mm or more from it, beyond 3 mm
    shell, idx = _shell()
    gap = shell & (idx[2] >= 25)
    cavity = (np.abs(idx[0] - 35) <= 3) & (np.abs(idx[1] - 35) <= 3) & (np.abs(idx[2] - 15) <= 2)
    kept = rim_implant(gap | cavity, shell & ~gap, (3.125, 3.59375, 6.25), 3.0)
    np.testing.assert_array_equal(kept, gap)


def _box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_small_pieces_far_from_the_implant_are_dropped_and_near_ones_kept():
    shape = (120, 40, 20)  # spacing 1 x 1 x 2 mm
    main = _box(shape, (10, 10, 5), (40, 30, 10))  # 30 x 20 x 10 mm: 3000 voxels
    near = _box(shape, (48, 15, 6), (52, 19, 8))  # 32 voxels, 9 mm along x from the main piece (x 39 -> 48)
    far = _box(shape, (100, 15, 6), (104, 19, 8))  # 32 voxels, 61 mm from it
    kept = drop_strays(main | near | far, SPACING, 40.0)
    np.testing.assert_array_equal(kept, main | near)
    np.testing.assert_array_equal(drop_strays(main | near | far, SPACING, 5.0), main)  # 9 mm is beyond 5 mm
    np.testing.assert_array_equal(drop_strays(main | near | far, SPACING, None), main | near | far)


def test_a_second_defect_s_implant_is_kept_however_far():
    shape = (120, 40, 20)
    main = _box(shape, (10, 10, 5), (40, 30, 10))  # 3000 voxels
    second = _box(shape, (90, 10, 5), (100, 30, 10))  # 1000 voxels, a third of it: a large piece, 50 mm away
    stray = _box(shape, (100, 35, 0), (103, 38, 2))  # 18 voxels, under a tenth of the largest
    np.testing.assert_array_equal(drop_strays(main | second | stray, SPACING, 3.0), main | second)


def test_a_lone_small_implant_and_a_healthy_skull_s_empty_one_stay_as_they_are():
    shape = (60, 40, 20)
    small = _box(shape, (10, 10, 5), (13, 13, 7))
    np.testing.assert_array_equal(drop_strays(small, SPACING, 40.0), small)
    assert not drop_strays(np.zeros(shape, bool), SPACING, 40.0).any()
