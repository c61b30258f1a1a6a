"""fam-skull implant: a CT with a defect, written as a DICOM series, to an implant, a mesh and a report."""

import json

import numpy as np
import pytest
import trimesh
from helpers import write_series

from data_prep.defects import make_defect
from data_prep.io import from_array, read_image, to_array
from data_prep.phantom import synthetic_ct
from fam_skull.cli import main
from fam_skull.metrics import dice


@pytest.fixture(scope="module")
def defective_ct(tmp_path_factory):
    """A head CT (table, metal, specks) whose skull lost a sphere of bone to soft tissue, as a DICOM series."""
    hu, truth, spacing, origin = synthetic_ct(2, (96, 96, 64))
    defect = make_defect(truth, spacing, "sphere", seed=4)
    hu[defect.region & truth] = 40
    image = from_array(hu)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    folder = write_series(image, tmp_path_factory.mktemp("scan") / "dicom")
    return folder, truth & ~defect.region


def test_a_dicom_ct_becomes_an_implant_mesh_and_a_report(tmp_path, defective_ct, trained_run, capsys):
    folder, defective_truth = defective_ct
    out = tmp_path / "out"
    args = ["implant", str(folder), "--run", str(trained_run), "--output", str(out), "--min-component-mm3", "0", "--quiet"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["input"] == "ct" and set(report["seconds"]) == {"read", "skull", "networks", "mesh", "report"}
    skull = read_image(out / "skull_mask.nii.gz")
    assert skull.GetSize() == read_image(folder).GetSize()
    assert dice(to_array(skull) != 0, defective_truth) > 0.98  # the chosen mask, the table and screw left out
    implant = to_array(read_image(out / "implant.nii.gz")) != 0
    completed = to_array(read_image(out / "completed_skull.nii.gz")) != 0
    assert not (implant & (to_array(skull) != 0)).any() and report["overlap_ml"] == 0
    assert np.array_equal(completed, implant | (to_array(skull) != 0))
    assert (out / "report.png").stat().st_size > 10_000
    if report["implant"]:  # a two-epoch network may find nothing to add; when it does, the mesh is printable
        mesh = trimesh.load(out / "implant.stl", file_type="stl")
        assert mesh.is_watertight and mesh.volume > 0
        assert mesh.volume / 1000 == pytest.approx(report["volume_ml"], rel=0.1)
    else:
        assert not implant.any() and not (out / "implant.stl").exists()
    assert "report:" in capsys.readouterr().out


def test_a_folder_with_two_series_is_refused_without_writing(tmp_path, defective_ct, trained_run, capsys):
    folder, _ = defective_ct
    image = read_image(folder)
    write_series(image, folder.parent / "two", uid="1.2.3.4")
    write_series(image, folder.parent / "two", uid="1.2.3.5", prefix="b")
    out = tmp_path / "out"
    assert main(["implant", str(folder.parent / "two"), "--run", str(trained_run), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds 2 DICOM series: 1.2.3.4 (CT head, 64 files)" in err and "--series UID" in err
    assert not (out / "report.json").exists()
