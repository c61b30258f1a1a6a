import numpy as np
from scipy import ndimage

from data_prep.phantom import synthetic_skull


def test_same_anatomy_on_any_grid():
    coarse, s1, _ = synthetic_skull(4, (64, 64, 32))
    fine, s2, _ = synthetic_skull(4, (128, 128, 64))
    # block-average the fine skull onto the coarse grid: the two rasterizations agree
    down = fine.reshape(64, 2, 64, 2, 32, 2).mean(axis=(1, 3, 5)) >= 0.5
    dice = 2 * (down & coarse).sum() / (down.sum() + coarse.sum())
    assert dice > 0.75
    other, _, _ = synthetic_skull(5, (128, 128, 64))
    assert 2 * (other & fine).sum() / (other.sum() + fine.sum()) < 0.9


def test_skull_is_one_closed_shell_of_plausible_size():
    mask, spacing, _ = synthetic_skull(1, (128, 128, 64))
    _, n = ndimage.label(mask, np.ones((3, 3, 3)))
    assert n == 1
    bone = mask.sum() * np.prod(spacing) / 1e6
    assert 0.25 < bone < 0.9  # litres
    # every axial slice of the upper vault is a closed ring, on a fine and on a coarse grid
    for shape in ((128, 128, 64), (32, 32, 16)):
        m, _, _ = synthetic_skull(1, shape)
        z = np.nonzero(m.any(axis=(0, 1)))[0]
        for k in range(z[0] + int(0.5 * (z[-1] - z[0])), z[0] + int(0.85 * (z[-1] - z[0]))):
            ring = m[:, :, k]
            assert (ndimage.binary_fill_holes(ring) & ~ring).sum() > 0.5 * ring.sum(), (shape, k)
