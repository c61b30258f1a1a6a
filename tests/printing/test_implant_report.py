"""report.py: thickness and seam of constructed plates whose answers are known by construction."""

import numpy as np
import pytest

from data_prep.io import from_array
from fam_skull.predict.mesh import surface_mesh
from fam_skull.printing.report import implant_report, seam_mm, thickness_mm


def _shell_and_cap(spacing=(0.8, 0.8, 0.8)):
    """A spherical shell (outer radius 20, 5 voxels thick) and its upper half, the cap."""
    idx = np.indices((56, 56, 56)).astype(float) - 27.5
    r = np.sqrt((idx**2).sum(0))
    shell = (r >= 15) & (r < 20)
    cap = shell & (idx[2] > 0)
    return shell, cap, idx


@pytest.mark.parametrize("voxels", [3, 5, 8])
def test_a_flat_plate_is_as_thick_as_it_was_built(voxels):
    plate = np.zeros((40, 40, 20), bool)
    plate[5:35, 5:35, 4 : 4 + voxels] = True
    spacing = np.array([0.5, 0.5, 0.75])
    thick = thickness_mm(plate, spacing)
    assert np.median(thick) == pytest.approx(voxels * 0.75, abs=0.75)  # within one voxel along z


def test_the_seam_of_a_shrunk_implant_is_its_ring():
    shell, cap, idx = _shell_and_cap()
    spacing = np.array([0.8, 0.8, 0.8])
    defective = shell & ~cap
    assert seam_mm(cap, defective, spacing)[0] <= 0.8 * 2  # an implant that fills the hole: a voxel's staircase at most
    shrunk = cap & (idx[2] > 3)  # the rim of the hole (3 voxels of z) left open
    width, at_limit = seam_mm(shrunk, defective, spacing)
    assert not at_limit and 1.5 <= width <= 3 * 0.8 + 0.8 + 1e-9


def test_the_report_of_an_implant_that_fills_its_hole():
    shell, cap, _ = _shell_and_cap()
    spacing = (0.8, 0.8, 0.8)
    image = from_array(cap.astype(np.uint8))
    image.SetSpacing(spacing)
    mesh = surface_mesh(cap, image)
    r = implant_report(cap, shell & ~cap, spacing, mesh)
    assert r["volume_ml"] == pytest.approx(cap.sum() * 0.8**3 / 1000)
    assert r["mesh_volume_ml"] == pytest.approx(r["volume_ml"], rel=0.05) and r["watertight"]
    assert r["overlap_ml"] == 0 and r["thickness_mm"]["mean"] == pytest.approx(5 * 0.8, abs=0.8)
    size = np.array(r["bounding_box_mm"]["size"])
    extent = (np.ptp(np.argwhere(cap), axis=0)) * 0.8
    np.testing.assert_allclose(size, extent + 0.8, atol=0.4)  # the surface lies half a voxel outside the centres
    assert implant_report(np.zeros_like(cap), shell, spacing, None) == {"implant": False, "volume_ml": 0.0, "overlap_ml": 0.0}
