"""box.py: bounding boxes against hand-placed voxels."""

import numpy as np

from data_prep.box import bounding_box


def test_the_box_of_two_voxels_grown_and_clipped():
    a, b = np.zeros((10, 8, 6), bool), np.zeros((10, 8, 6), bool)
    a[2, 3, 1] = True
    b[6, 1, 4] = True
    assert bounding_box(a) == (slice(2, 3), slice(3, 4), slice(1, 2))
    assert bounding_box(a, b) == (slice(2, 7), slice(1, 4), slice(1, 5))  # the union's box
    assert bounding_box(a, b, margin=2) == (slice(0, 9), slice(0, 6), slice(0, 6))  # clipped at 0 and at the far end of z
    assert bounding_box(a, margin=(0, 1, 3)) == (slice(2, 3), slice(2, 5), slice(0, 5))


def test_an_empty_mask_has_no_box():
    assert bounding_box(np.zeros((4, 4, 4), bool)) is None
