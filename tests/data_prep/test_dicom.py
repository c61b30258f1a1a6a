"""dicom.py: a series written slice by slice (SimpleITK's GDCM writer, as a scanner export would be) reads back to
the NIfTI's array and geometry, oblique ones included; each broken series gets its own message."""

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import write_series

from data_prep.dicom import is_dicom_folder, read_dicom_series
from data_prep.io import VolumeError, from_array, read_image, to_array, write_image
from data_prep.sources import volumes


def _volume(direction=None):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(20, 16, 12)).astype(np.int16)
    image = from_array(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-30.0, 12.0, 55.5))
    image.SetDirection(np.eye(3).ravel().tolist() if direction is None else np.asarray(direction, float).ravel().tolist())
    return image


def _oblique():
    t = np.radians(20)
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(t / 2), -np.sin(t / 2)], [0, np.sin(t / 2), np.cos(t / 2)]])
    return rz @ rx


@pytest.mark.parametrize("direction", [np.eye(3), _oblique()], ids=["axial", "oblique"])
def test_a_series_reads_back_as_the_nifti_it_was_written_from(tmp_path, direction):
    image = _volume(direction)
    write_image(image, tmp_path / "scan.nii.gz")
    write_series(image, tmp_path / "dicom")
    assert is_dicom_folder(tmp_path / "dicom") and not is_dicom_folder(tmp_path)
    nifti, dicom = read_image(tmp_path / "scan.nii.gz"), read_image(tmp_path / "dicom")
    np.testing.assert_array_equal(to_array(dicom), to_array(nifti))
    np.testing.assert_allclose(dicom.GetSpacing(), nifti.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(dicom.GetOrigin(), nifti.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(dicom.GetDirection(), nifti.GetDirection(), atol=1e-5)
    assert volumes(tmp_path / "dicom") == [tmp_path / "dicom"]  # the folder is one scan
    assert tmp_path / "dicom" in volumes(tmp_path)


def test_two_series_are_listed_and_one_can_be_chosen(tmp_path):
    image = _volume()
    write_series(image, tmp_path / "d", uid="1.2.826.0.1.3680043.2.1125.1", description="bone kernel")
    write_series(image * 2, tmp_path / "d", uid="1.2.826.0.1.3680043.2.1125.2", description="soft kernel", prefix="b")
    with pytest.raises(VolumeError, match=r"2 DICOM series: .*\.1 \(bone kernel, 12 files\).*\.2 \(soft kernel.*--series UID"):
        read_image(tmp_path / "d")
    chosen = read_dicom_series(tmp_path / "d", "1.2.826.0.1.3680043.2.1125.2")
    np.testing.assert_array_equal(to_array(chosen), to_array(image) * 2)
    with pytest.raises(VolumeError, match="no series 9.9"):
        read_dicom_series(tmp_path / "d", "9.9")


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"skip": [5]}, r"about 1 slice\(s\) missing between"),
        ({"duplicate": 4}, "duplicated slices at position"),
        ({"tilt_mm": 1.0}, "gantry tilt of about 21.8 degrees"),
        ({"jitter": {6: 0.4}}, "non-uniform slice spacing"),
        ({"keep": [0]}, "a single slice"),
    ],
    ids=["missing", "duplicate", "tilt", "uneven", "single"],
)
def test_each_broken_series_gets_its_own_message(tmp_path, damage, message):
    write_series(_volume(), tmp_path / "d", **damage)
    with pytest.raises(VolumeError, match=message) as raised:
        read_image(tmp_path / "d")
    assert str(tmp_path / "d") in str(raised.value)


def test_a_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VolumeError, match="no DICOM series"):
        read_image(tmp_path)
    assert sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path)) == ()
