"""Implants only where bone is missing: components meeting the defective skull are kept, pieces floating in the
cranial cavity or outside the head are dropped, on constructed skulls whose pieces are known."""

import numpy as np

from fam_skull.networks.implant import rim_implant

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
