"""The ``anywhere`` defect family: seeded, exact, within its size bounds, reaching every region of the skull; and
the regions themselves, checked on a constructed skull whose parts are known."""

import numpy as np
import pytest

from data_prep.coverage import REGIONS, TRAINING_TYPES, coverage, covering, main, skull_regions
from data_prep.defects import limits, make_defect
from data_prep.phantom import synthetic_skull


@pytest.fixture(scope="module")
def skull():
    return synthetic_skull(4, (48, 48, 48))[:2]


def test_regions_of_a_constructed_shell():
    # a spherical shell in a 41^3 box; LPS: +x left, +y posterior, +z superior
    idx = np.indices((41, 41, 41)) - 20
    r = np.sqrt((idx**2).sum(0))
    shell = (r > 16) & (r <= 20)
    labels = skull_regions(shell)
    at = {name: labels[20 + dx, 20 + dy, 20 + dz] for name, (dx, dy, dz) in {
        "vault": (0, 0, 18), "left": (18, 0, 0), "right": (-18, 0, 0), "frontal": (0, -18, 4),
        "occiput": (0, 18, 0), "face": (0, -16, -9), "base": (0, 8, -17),
    }.items()}  # fmt: skip
    assert {name: REGIONS[v - 1] for name, v in at.items()} == {name: name for name in at}
    assert labels[~shell].max() == 0 and labels[shell].min() >= 1


def test_anywhere_is_seeded_exact_and_within_its_bounds(skull):
    mask, spacing = skull
    low, high = limits("anywhere")
    for seed in range(12):
        d = make_defect(mask, spacing, "anywhere", seed)
        assert np.array_equal(d.region, make_defect(mask, spacing, "anywhere", seed).region)
        implant, defective = mask & d.region, mask & ~d.region
        assert not (implant & defective).any() and np.array_equal(implant | defective, mask)
        assert low <= implant.sum() / mask.sum() <= high
    assert not np.array_equal(make_defect(mask, spacing, "anywhere", 0).region, make_defect(mask, spacing, "anywhere", 1).region)


def test_anywhere_reaches_every_region_and_the_training_types_do_not(skull):
    mask, spacing = skull
    _, anywhere, fractions = coverage(mask, spacing, ("anywhere",), 40)
    assert min(anywhere.values()) >= 0.15, anywhere
    assert min(fractions) >= limits("anywhere")[0] and max(fractions) <= limits("anywhere")[1]
    _, named, _ = coverage(mask, spacing, TRAINING_TYPES, 40)
    assert named["occiput"] < 0.1 and named["base"] < 0.1  # what the named types never teach


def test_the_coverage_command_writes_its_figure(tmp_path, capsys):
    main(["--draws", "10", "--shape", "32", "32", "32", "--output", str(tmp_path / "coverage.png")])
    assert (tmp_path / "coverage.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert all(f"| {r} |" in out for r in REGIONS)


def test_covering_counts_draws_that_remove_half_of_a_target_defect(skull):
    mask, spacing = skull
    # a family against itself: draw i is target i, so every draw removes all of a target's bone
    assert covering(mask, spacing, "sphere", "sphere", draws=4, targets=4) == 1.0
    # vertex spheres never take half of a face: the held-out facial slab lies far below the top quarter
    assert covering(mask, spacing, "sphere", "facial", draws=6, targets=3) == 0.0
