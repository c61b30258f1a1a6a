"""Hostile and broken input to evaluate, table by table: each row must give its exit status and one message naming
the file, case or key; the good cases are still done, nothing lands outside the output folder, and nothing already
computed is lost (the shared checks: helpers.assert_refused). docs/reliability.md lists the same checks."""

import json
import re
import shutil

import numpy as np
import SimpleITK as sitk
from helpers import manifest_variant, refusal_test

from data_prep.io import Geometry, from_array, read_image, to_array, write_image
from data_prep.manifest import Manifest
from fam_skull.cli import main

# name -> (argv built from the test's folders, exit status, message pattern)
REFUSALS = {
    "evaluate output is a file": (
        lambda t: ["evaluate", str(t["predictions"]), "--manifest", str(t["manifest"]), "--output", str(t["file"])],
        2,
        r"a_file\.txt: is a file",
    ),
    "evaluate subset 0": (
        lambda t: ["evaluate", str(t["predictions"]), "--manifest", str(t["manifest"]), "--output", str(t["out"]), "--subset", "0"],
        2,
        r"subset: must be >= 1",
    ),
    "evaluate subset -1": (
        lambda t: ["evaluate", str(t["predictions"]), "--manifest", str(t["manifest"]), "--output", str(t["out"]), "--subset", "-1"],
        2,
        r"subset: must be >= 1",
    ),
    "broken predictions index": (
        lambda t: ["evaluate", str(t["broken"]), "--manifest", str(t["manifest"]), "--output", str(t["out"])],
        2,
        r"broken/predictions\.json: not a readable JSON file",
    ),
}


test_bad_arguments_are_refused_before_any_work = refusal_test(REFUSALS)


def test_evaluate_exits_nonzero_when_every_case_failed(tmp_path, manifest, predictions, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(predictions, bad)
    for f in bad.glob("*_implant.nii.gz"):
        f.unlink()
    assert main(["evaluate", str(bad), "--manifest", str(manifest), "--output", str(tmp_path / "e"), "--quiet"]) == 1
    assert "every case failed" in capsys.readouterr().err
    assert (tmp_path / "e" / "table.md").is_file()  # the report of the failures is still written


def test_cached_scores_follow_the_options_and_the_reference(tmp_path, manifest, predictions):
    out = tmp_path / "e"
    eval_args = [str(predictions), "--manifest", str(manifest), "--output", str(out), "--sets", "eval1", "--quiet"]
    assert main(["evaluate", *eval_args]) == 0
    case_file = sorted((out / "baseline" / "cases").glob("*.json"))[0]
    first = json.loads(case_file.read_text())
    assert first["key"]["empty"] == "diagonal"
    assert first["prediction_files"]["implant"].startswith(str(predictions)) and first["reference_files"]["implant"].endswith(
        "_implant.nii.gz"
    )
    assert main(["evaluate", *eval_args, "--empty", "inf"]) == 0
    again = json.loads(case_file.read_text())
    assert again["key"]["empty"] == "inf"
    assert json.loads((out / "baseline" / "summary.json").read_text())["empty_policy"] == "inf"
    # a changed reference (here emptied): its case is scored again against the new file
    data = Manifest.load(manifest)
    case = next(c for c in data.cases if c["id"] == first["case"])
    copy = manifest_variant(tmp_path, manifest, lambda d: None)
    image = read_image(data.file(case, "original", "implant"))
    moved = tmp_path / "data" / "implant_copy.nii.gz"
    write_image(from_array(np.zeros_like(to_array(image)), Geometry.of(image)), moved)
    changed = json.loads(copy.read_text())
    for c in changed["cases"]:
        if c["id"] == case["id"]:
            c["original"]["implant"] = moved.name
    copy.write_text(json.dumps(changed))
    assert (
        main(["evaluate", str(predictions), "--manifest", str(copy), "--output", str(out), "--sets", "eval1", "--empty", "inf", "--quiet"])
        == 0
    )
    rescored = json.loads(case_file.read_text())
    assert rescored["key"]["reference"]["implant"][0] == str(moved.resolve())
    assert again["implant"]["empty"] in (None, "prediction") and rescored["implant"]["empty"] in ("reference", "both")


def test_a_prediction_off_the_reference_origin_is_recorded_per_case(tmp_path, manifest, predictions):
    bad = tmp_path / "bad"
    shutil.copytree(predictions, bad)
    index = json.loads((bad / "predictions.json").read_text())
    victim = sorted(index["cases"])[0]
    path = bad / index["cases"][victim]["files"]["implant"]
    image = read_image(path)
    image.SetOrigin(tuple(np.add(image.GetOrigin(), (40.0, 0.0, 0.0))))
    sitk.WriteImage(image, str(path))
    assert main(["evaluate", str(bad), "--manifest", str(manifest), "--output", str(tmp_path / "e"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "e" / "baseline" / "summary.json").read_text())
    errors = {r["case"]: r["error"] for r in summary["metric_per_case"] if "error" in r}
    assert list(errors) == [victim]
    assert re.search(r"_implant\.nii\.gz: origin .* is 40 mm from \(.*\), the reference's", errors[victim])
