"""Predictions in each case's original geometry, implants, STL meshes, reruns, and files outside a manifest."""

import json
import shutil

import numpy as np
from helpers import write_volume

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from fam_skull.cli import main
from fam_skull.networks.implant import clean_implant
from fam_skull.predict import PredictOptions, predict


def test_predictions_are_in_the_original_geometry(tmp_path, manifest, trained_run):
    out = tmp_path / "pred"
    args = ["predict", "--run", str(trained_run), "--manifest", str(manifest), "--output", str(out), "--stl", "--min-component-mm3", "0"]
    assert main(args + ["--quiet"]) == 0
    m = Manifest.load(manifest)
    index = json.loads((out / "predictions.json").read_text())
    cases = m.role("eval1", "eval2")
    assert sorted(index["cases"]) == [c["id"] for c in cases] and index["method"] == "baseline"
    for case in cases:
        ref = read_image(m.file(case, "original", "complete"))
        files = index["cases"][case["id"]]["files"]
        for kind in ("complete", "implant"):
            img = read_image(out / files[kind])
            assert img.GetSize() == ref.GetSize() == (48, 48, 24)
            np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing())
            np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin())
            np.testing.assert_allclose(img.GetDirection(), ref.GetDirection())
        completed = to_array(read_image(out / files["complete"])) != 0
        implant = to_array(read_image(out / files["implant"])) != 0
        defective = to_array(read_image(m.file(case, "original", "defective"))) != 0
        assert np.array_equal(implant, completed & ~defective)  # no cleaning with --min-component-mm3 0
        if "stl" in files:
            data = (out / files["stl"]).read_bytes()
            n = int(np.frombuffer(data[80:84], np.uint32)[0])
            assert len(data) == 84 + 50 * n and n > 0
            tri = np.frombuffer(data[84:], dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])["v"].reshape(-1, 3)
            idx = np.argwhere(implant)
            lo = np.array(ref.GetOrigin()) + (idx.min(0) - 1) * np.array(ref.GetSpacing())
            hi = np.array(ref.GetOrigin()) + (idx.max(0) + 1) * np.array(ref.GetSpacing())
            assert (tri >= lo - 1e-3).all() and (tri <= hi + 1e-3).all()
    assert any("stl" in index["cases"][c["id"]]["files"] for c in cases)  # the mesh checks above ran
    assert main(args + ["--quiet"]) == 0
    assert json.loads((out / "predictions.json").read_text())["cases"] == index["cases"]  # rerun: all reused
    from fam_skull.common.checkpoint import load_checkpoint, save_checkpoint
    from fam_skull.predict import PredictOptions, predict

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    opts = PredictOptions(run=run, output=tmp_path / "again", manifest=manifest, quiet=True)
    assert (predict(opts).predicted, predict(opts).reused) == (len(cases), len(cases))
    best = run / "checkpoints" / "best.pt"
    save_checkpoint(load_checkpoint(best), best)  # new weights file (e.g. a longer run): nothing is reused
    assert predict(opts).predicted == len(cases)


def test_predicting_files_with_their_own_geometry(tmp_path, skulls, trained_run):
    mask, spacing = skulls[0]
    direction = (0, 1, 0, -1, 0, 0, 0, 0, 1)  # rotated in-plane: reoriented to LPS and back
    src = write_volume(tmp_path / "patient_7.nrrd", mask.astype(np.int16) * 1200 - 1000 * (~mask), spacing, (12.0, -30.0, 4.0), direction)
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(trained_run), "--files", str(src), "--output", str(out), "--quiet"]) == 0
    img = read_image(out / "patient_7_complete.nii.gz")
    ref = read_image(src)
    assert img.GetSize() == ref.GetSize()
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    bad = tmp_path / "broken.nrrd"
    bad.write_bytes(b"NRRD0004\nnope\n")
    assert main(["predict", "--run", str(trained_run), "--files", str(bad), str(src), "--output", str(out), "--quiet"]) == 0
    failed = json.loads((out / "predictions.json").read_text())["failed"]
    assert [f["case"] for f in failed] == ["broken"] and "cannot read it" in failed[0]["reason"]
    opts = PredictOptions(run=trained_run, output=tmp_path / "files", files=[src], quiet=True)
    assert predict(opts).predicted == 1
    assert predict(opts).reused == 1  # the same scan again: its prediction is reused
    other, _ = skulls[1]
    write_volume(src, other.astype(np.int16) * 1200 - 1000 * (~other), spacing, (12.0, -30.0, 4.0), direction)
    assert predict(opts).predicted == 1  # the same name, another scan: its old prediction is not reused


def test_clean_implant_drops_small_pieces():
    implant = np.zeros((20, 20, 20), bool)
    implant[2:8, 2:8, 2:8] = True  # 216 voxels
    implant[15, 15, 15] = True  # a sliver
    kept = clean_implant(implant, (0.5, 0.5, 0.5), min_component_mm3=1.0)  # one voxel = 0.125 mm3
    assert kept.sum() == 216 and not kept[15, 15, 15]


def test_sliding_window_matches_the_grid_shape(tmp_path, manifest, trained_run):
    out = tmp_path / "sw"
    assert (
        main(
            [
                "predict",
                "--run",
                str(trained_run),
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--roi-size",
                "16,16,16",
                "--roles",
                "eval1",
                "--quiet",
            ]
        )
        == 0
    )
    index = json.loads((out / "predictions.json").read_text())
    assert len(index["cases"]) == len(Manifest.load(manifest).role("eval1")) and not index["failed"]
