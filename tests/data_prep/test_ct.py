"""ct.py: the skull of a head CT with a bone-dense table pressed against the occiput, metal and specks, measured
against the phantom's own skull (the truth it was built from)."""

import numpy as np
import pytest

from data_prep.ct import skull_from_ct
from data_prep.io import VolumeError
from data_prep.phantom import synthetic_ct
from data_prep.preprocess import BONE_HU, largest_component
from fam_skull.metrics import dice


def test_the_table_metal_and_specks_are_not_skull():
    hu, truth, spacing, _ = synthetic_ct(0, (96, 96, 64), table=True)
    found = skull_from_ct(hu, spacing)
    naive = largest_component(hu >= BONE_HU)  # threshold and largest piece: the table joins the skull
    assert dice(naive, truth) < 0.7
    assert dice(found.skull, truth) > 0.99
    assert not (found.skull & (hu >= 3000)).any()  # the screw head is left out
    voxel_ml = np.prod(spacing) / 1000
    assert found.removed_ml["metal"] == pytest.approx((hu >= 3000).sum() * voxel_ml)
    assert found.removed_ml["outside_head"] + found.removed_ml["table_in_contact"] > 500  # the 14 mm table, in ml
    assert found.skull_ml == pytest.approx(found.skull.sum() * voxel_ml)


def test_without_a_table_the_skull_is_found_whole():
    hu, truth, spacing, _ = synthetic_ct(1, (96, 96, 64), table=False)
    found = skull_from_ct(hu, spacing)
    assert dice(found.skull, truth) > 0.999 and found.removed_ml["table_in_contact"] == 0


def test_a_scan_without_bone_is_refused():
    hu = np.full((40, 40, 30), -1000, np.int16)
    hu[5:35, 5:35, 3:27] = 40  # soft tissue only
    with pytest.raises(VolumeError, match="no bone"):
        skull_from_ct(hu, (2.0, 2.0, 2.0))
    with pytest.raises(VolumeError, match="no bone"):
        skull_from_ct(np.full((20, 20, 20), -1000, np.int16), (2.0, 2.0, 2.0))


def test_bone_in_air_is_all_head():
    """A dry skull scanned in air (no soft tissue to open): the skull is the bone itself."""
    hu, truth, spacing, _ = synthetic_ct(3, (64, 64, 40), table=False)
    dry = np.where(truth, 1000, -1000).astype(np.int16)
    assert dice(skull_from_ct(dry, spacing).skull, truth) == 1.0
