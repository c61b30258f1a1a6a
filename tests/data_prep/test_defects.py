import numpy as np
import pytest

from data_prep.defects import DEFECT_TYPES, DefectError, limits, make_defect
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
    low, high = limits(kind)
    assert low <= implant.sum() / mask.sum() <= high
    assert d.removed_fraction == pytest.approx(implant.sum() / mask.sum())
    # implant and defective partition the complete skull
    assert not (implant & defective).any() and np.array_equal(implant | defective, mask)
    # the same seed gives the same defect
    assert np.array_equal(make_defect(mask, spacing, kind, seed=3).region, d.region)


# Where each type's implant lies, as the centroid's position in the skull's bounding box (0..1 per axis; LPS: low y is
# anterior, high z superior), read off the placement rules in defects._draw: sphere and cube centres on the top
# quarter, bilateral at the vertex midline, facial and frontoorbital anterior (the face low, the orbits mid-height),
# parietotemporal on one side, random anywhere above 40% of the height.
PLACEMENT = {
    "sphere": lambda x, y, z: z > 0.6,
    "cube": lambda x, y, z: z > 0.6,
    "bilateral": lambda x, y, z: z > 0.8 and abs(x - 0.5) < 0.1,
    "facial": lambda x, y, z: y < 0.2 and z < 0.6,
    "frontoorbital": lambda x, y, z: y < 0.2 and 0.35 < z < 0.7,
    "parietotemporal": lambda x, y, z: abs(x - 0.5) > 0.35 and 0.4 < z < 0.8,
    "random": lambda x, y, z: z > 0.3,
}


@pytest.mark.parametrize("kind", PLACEMENT)  # anywhere: tests/data_prep/test_coverage.py
def test_anatomical_placement(skull, kind):
    mask, spacing, _ = skull
    extent = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
    lo, hi = np.array([e[0] for e in extent]), np.array([e[-1] for e in extent])
    for seed in (1, 2, 3):
        implant = mask & make_defect(mask, spacing, kind, seed=seed).region
        x, y, z = (np.argwhere(implant).mean(0) - lo) / (hi - lo)
        assert PLACEMENT[kind](x, y, z), (kind, seed, round(x, 2), round(y, 2), round(z, 2))


def test_impossible_defect_is_reported():
    tiny = np.zeros((40, 40, 40), bool)
    tiny[:, :, 0] = True  # a flat plate: every sphere on it removes far too much or too little
    tiny[0, 0, 39] = True
    with pytest.raises(DefectError, match="no sphere defect removed"):
        make_defect(tiny, (0.2, 0.2, 0.2), "sphere", seed=0, max_attempts=3)
    with pytest.raises(ValueError, match="unknown defect type 'hole'"):
        make_defect(tiny, (1, 1, 1), "hole", seed=0)
