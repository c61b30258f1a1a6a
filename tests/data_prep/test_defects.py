import numpy as np
import pytest

from data_prep.defects import DEFECT_TYPES, DefectError, make_defect
from data_prep.phantom import synthetic_skull


@pytest.fixture(scope="module")
def skull():
    return synthetic_skull(7, (96, 96, 48))


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_each_defect_removes_a_plausible_part(skull, kind):
    mask, spacing, _ = skull
    d = make_defect(mask, spacing, kind, seed=3)
    implant = mask & d.region
    defective = mask & ~d.region
    assert 0.005 <= implant.sum() / mask.sum() <= 0.30
    assert d.removed_fraction == pytest.approx(implant.sum() / mask.sum())
    # implant and defective partition the complete skull
    assert not (implant & defective).any() and np.array_equal(implant | defective, mask)
    # the same seed gives the same defect
    assert np.array_equal(make_defect(mask, spacing, kind, seed=3).region, d.region)


def test_anatomical_placement(skull):
    mask, spacing, _ = skull
    z = np.nonzero(mask.any(axis=(0, 1)))[0]
    y = np.nonzero(mask.any(axis=(0, 2)))[0]
    height = z[-1] - z[0]
    for kind in ("sphere", "cube", "bilateral"):
        implant = mask & make_defect(mask, spacing, kind, seed=1).region
        assert np.nonzero(implant.any(axis=(0, 1)))[0].mean() > z[0] + 0.6 * height, kind
    face = mask & make_defect(mask, spacing, "facial", seed=1).region
    assert np.nonzero(face.any(axis=(0, 2)))[0].max() < y[0] + 0.4 * (y[-1] - y[0])  # anterior (LPS: low y)


def test_impossible_defect_is_reported():
    tiny = np.zeros((40, 40, 40), bool)
    tiny[:, :, 0] = True  # a flat plate: every sphere on it removes far too much or too little
    tiny[0, 0, 39] = True
    with pytest.raises(DefectError, match="no sphere defect removed"):
        make_defect(tiny, (0.2, 0.2, 0.2), "sphere", seed=0, max_attempts=3)
    with pytest.raises(ValueError, match="unknown defect type 'hole'"):
        make_defect(tiny, (1, 1, 1), "hole", seed=0)
