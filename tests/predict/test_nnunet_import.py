"""nnU-Net's predictions brought back: ids mapped to fam-skull's, the implant less the defective skull, the
completed skull rebuilt, a broken prediction recorded while the others are imported, and evaluate scoring them."""

import json
import shutil

import numpy as np
import SimpleITK as sitk

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from data_prep.nnunet import CASES_FILE, export_nnunet
from fam_skull.cli import main


def test_nnunet_predictions_are_imported_and_scored(tmp_path, manifest):
    dataset = export_nnunet(manifest, tmp_path / "raw").dataset
    rows = [line.split(",") for line in (dataset / CASES_FILE).read_text().splitlines()[1:]]
    tests = sorted(r[0] for r in rows if r[3] in ("eval1", "eval2"))
    predicted = tmp_path / "nnunet_out"
    predicted.mkdir()
    for nnunet_id in tests:  # a perfect nnU-Net: its references as predictions
        shutil.copyfile(dataset / "labelsTs" / f"{nnunet_id}.nii.gz", predicted / f"{nnunet_id}.nii.gz")
    first, broken = tests[0], tests[1]
    label = sitk.ReadImage(str(predicted / f"{first}.nii.gz"))
    image = sitk.ReadImage(str(dataset / "imagesTs" / f"{first}_0000.nii.gz"))
    sitk.WriteImage(label | image, str(predicted / f"{first}.nii.gz"))  # the defective skull predicted too
    sitk.WriteImage(label[:-2], str(predicted / f"{broken}.nii.gz"))
    out = tmp_path / "imported"
    assert main(["import-nnunet", str(predicted), "--dataset", str(dataset), "--output", str(out), "--quiet"]) == 0
    index = json.loads((out / "predictions.json").read_text())
    ids = {r[0]: r[1] for r in rows}
    assert index["method"] == "nnU-Net"
    assert sorted(index["cases"]) == sorted(ids[n] for n in tests if n != broken)
    assert [f["case"] for f in index["failed"]] == [ids[broken]] and "its image's" in index["failed"][0]["reason"]
    m = Manifest.load(manifest)
    case = next(c for c in m.cases if c["id"] == ids[first])
    for kind in ("implant", "complete"):
        got = read_image(out / f"{case['id']}_{kind}.nii.gz")
        reference = read_image(m.file(case, "original", kind))
        np.testing.assert_array_equal(to_array(got), to_array(reference))
        assert got.GetDirection() == reference.GetDirection() and got.GetOrigin() == reference.GetOrigin()
    report = tmp_path / "report"
    assert main(["evaluate", f"nnU-Net={out}", "--manifest", str(manifest), "--output", str(report), "--quiet"]) == 0
    summary = json.loads((report / "nnU_Net" / "summary.json").read_text())  # the label as a folder name
    scored = [r for r in summary["metric_per_case"] if "error" not in r]
    assert len(scored) == len(tests) - 1 and all(r["implant"]["dsc"] == 1.0 for r in scored)
