"""mesh.py: closed, outward, volume-keeping surfaces where the voxels lie, for identity, oblique and mirrored scans."""

import numpy as np
import pytest
import SimpleITK as sitk
import trimesh

from data_prep.io import from_array
from fam_skull.predict.mesh import MeshError, surface_mesh, write_stl


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


DIRECTIONS = {
    "identity": np.eye(3),
    "oblique": _rotation([1, 2, 0.5], 25),
    "mirrored": np.diag([-1.0, 1.0, 1.0]) @ _rotation([0, 0, 1], 10),
}


def _shell():
    """A thick, off-centre ellipsoidal shell with a hole: an implant-like curved plate with an edge."""
    idx = np.indices((40, 36, 30)).astype(float)
    r = np.sqrt(((idx[0] - 22) / 15) ** 2 + ((idx[1] - 17) / 13) ** 2 + ((idx[2] - 12) / 11) ** 2)
    mask = (r > 0.7) & (r < 1.0) & (idx[2] > 9)
    mask[18:26, 14:20, :] = False
    return mask


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_mesh_is_closed_outward_and_where_the_voxels_are(name):
    mask = _shell()
    image = from_array(mask.astype(np.uint8))
    spacing = np.array([0.6, 0.8, 1.5])
    origin = np.array([-40.0, 12.5, 80.0])
    direction = DIRECTIONS[name]
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction.ravel().tolist())
    mesh = surface_mesh(mask, image)
    assert mesh.is_watertight and mesh.is_winding_consistent
    voxel_volume = mask.sum() * spacing.prod()
    assert mesh.volume > 0 and mesh.volume == pytest.approx(voxel_volume, rel=0.03)
    # every face normal points away from the solid: a point just outside each face lies outside the voxel mask
    centres = mesh.triangles_center + 0.3 * mesh.face_normals
    inside = np.linalg.solve(direction, (centres - origin).T).T / spacing  # back to (x, y, z) voxel indices
    voxel = np.round(inside).astype(int)
    valid = np.all((voxel >= 0) & (voxel < mask.shape), axis=1)
    outside_share = 1 - mask[tuple(voxel[valid].T)].mean()
    assert outside_share > 0.9
    # the mesh's centroid is the voxels' centroid in physical space
    points = origin + (np.argwhere(mask) * spacing) @ direction.T
    assert np.linalg.norm(mesh.center_mass - points.mean(0)) < 0.5 * spacing.min()


def test_ras_frame_is_the_lps_mesh_turned_about_z(tmp_path):
    mask = _shell()
    image = from_array(mask.astype(np.uint8))
    image.SetDirection(DIRECTIONS["oblique"].ravel().tolist())
    lps, ras = surface_mesh(mask, image), surface_mesh(mask, image, frame="RAS")
    np.testing.assert_allclose(ras.vertices, lps.vertices * [-1, -1, 1], atol=1e-9)
    assert ras.volume == pytest.approx(lps.volume, rel=1e-9)
    path = tmp_path / "implant.stl"
    n = write_stl(mask, image, path, frame="RAS")
    assert path.read_bytes()[:80].startswith(b"fam-skull mm SPACE=RAS")
    back = trimesh.load(path, file_type="stl")
    assert len(back.faces) == n and back.is_watertight and back.volume == pytest.approx(ras.volume, rel=1e-4)


def test_decimation_keeps_a_closed_surface_near_the_target():
    mask = _shell()
    image = from_array(mask.astype(np.uint8))
    full = surface_mesh(mask, image)
    small = surface_mesh(mask, image, faces=len(full.faces) // 4)
    assert len(small.faces) <= len(full.faces) // 4 * 1.05
    assert small.is_watertight and small.volume == pytest.approx(full.volume, rel=0.03)


def test_an_empty_mask_has_no_mesh():
    mask = np.zeros((8, 8, 8), bool)
    with pytest.raises(MeshError, match="empty"):
        surface_mesh(mask, sitk.Image(8, 8, 8, sitk.sitkUInt8))
