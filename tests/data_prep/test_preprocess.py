import numpy as np
import pytest
import SimpleITK as sitk

from data_prep.io import VolumeError, from_array, read_image, to_array, write_image
from data_prep.preprocess import Layout, binarize, largest_component


def ellipsoid(shape=(80, 70, 56), centre=(40, 35, 30), axes=(34, 29, 20)):
    idx = np.indices(shape, dtype=float)
    return sum(((i - c) / a) ** 2 for i, c, a in zip(idx, centre, axes)) <= 1


DIRECTIONS = {
    "identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS-like flips": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "permuted": (0, 0, 1, 1, 0, 0, 0, -1, 0),
    "oblique": tuple(sitk.VersorTransform((0.2, 0.1, 0.9), 0.2).GetMatrix()),
}


@pytest.mark.parametrize("direction", DIRECTIONS, ids=list(DIRECTIONS))
@pytest.mark.parametrize("slices", [None, 50, 64], ids=["all-slices", "crop", "pad"])
def test_grid_round_trip_restores_geometry(tmp_path, direction, slices):
    mask = ellipsoid()
    image = from_array(mask.astype(np.uint8))
    image.SetSpacing((0.8, 0.9, 1.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(DIRECTIONS[direction])
    write_image(image, tmp_path / "in.nrrd")
    source = read_image(tmp_path / "in.nrrd")
    layout = Layout.plan(source, (64, 56, 44), axial_slices=slices)
    canonical = layout.canonical_array(source).astype(bool)
    grid = layout.to_grid(canonical)
    assert grid.shape == (64, 56, 44)
    write_image(layout.from_grid(grid), tmp_path / "back.nii.gz")
    back = read_image(tmp_path / "back.nii.gz")
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    restored = to_array(back) != 0
    if layout.z_shift > 0:  # the slices below the kept top ones are gone by design
        canonical[:, :, : layout.z_shift] = False
        mask = to_array(layout.to_original(canonical)) != 0
    assert 2 * (restored & mask).sum() / (restored.sum() + mask.sum()) >= 0.99
    # the record survives JSON-style serialisation
    assert Layout.from_dict(layout.to_dict()) == layout


def test_grid_geometry_keeps_the_physical_extent():
    image = from_array(np.zeros((40, 30, 20), np.uint8))
    image.SetSpacing((0.5, 1.0, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    g = Layout.plan(image, (20, 15, 10)).grid_geometry()
    assert g.spacing == (1.0, 2.0, 4.0)
    # first voxel corner is kept: 1 - 0.25 + 0.5 = 1.25 etc.
    np.testing.assert_allclose(g.origin, (1.25, 2.5, 4.0))


def test_binarize_and_largest_component():
    ct = np.full((10, 10, 10), -1000.0)
    ct[2:6, 2:6, 2:6] = 700
    ct[8, 8, 8] = 400
    mask = binarize(ct)  # negative values: CT, thresholded at 150 HU
    assert mask.sum() == 65
    assert largest_component(mask).sum() == 64
    assert binarize(np.array([[[0, 3]]]), kind="mask").sum() == 1
    with pytest.raises(VolumeError, match="scan.nrrd: the mask is empty"):
        binarize(np.zeros((3, 3, 3)), name="scan.nrrd")
    with pytest.raises(VolumeError, match="NaN"):
        binarize(np.full((3, 3, 3), np.nan), name="x")
