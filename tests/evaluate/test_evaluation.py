"""Evaluation: per-case files, medpy-checked aggregates, the paper table, plots, and bad predictions."""

import csv
import json
import shutil

import numpy as np
import pytest
from helpers import write_volume
from medpy.metric import binary

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from fam_skull.cli import main


def test_reports_and_medpy_checked_aggregates(tmp_path, manifest, predictions):
    second = tmp_path / "fam_pred"
    shutil.copytree(predictions, second)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                f"A={predictions}",
                f"B={second}",
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--subset",
                "1",
                "--workers",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    for name in (
        "table.md",
        "table.csv",
        "table_complete.md",
        "per_case.csv",
        "boxplots.png",
        "overlays_A.png",
        "report.md",
        "A/summary.json",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.reader((out / "table.csv").read_text().splitlines()))
    assert rows[0][1:] == [f"set {s}: {m}{sub}" for s in (1, 2) for m in ("DSC", "HD", "HD95") for sub in ("", " (100)")]
    assert [r[0] for r in rows[1:]] == ["A", "B"]
    summary = json.loads((out / "A" / "summary.json").read_text())
    m = Manifest.load(manifest)
    index = json.loads((predictions / "predictions.json").read_text())["cases"]
    eval1 = m.role("eval1")
    ref = []
    for case in eval1:
        gt = to_array(read_image(m.file(case, "original", "implant"))) != 0
        pred = to_array(read_image(predictions / index[case["id"]]["files"]["implant"])) != 0
        spacing = read_image(m.file(case, "original", "implant")).GetSpacing()
        ref.append(binary.hd95(pred, gt, spacing) if pred.any() else np.linalg.norm(np.array(gt.shape) * spacing))
    agg = summary["sets"]["eval1"]["implant"]["hd95"]
    assert agg["all"]["mean"] == pytest.approx(np.mean(ref), abs=1e-9)
    assert agg["subset"]["mean"] == pytest.approx(ref[0], abs=1e-9)  # --subset 1: the first case id
    assert summary["sets"]["eval1"]["subset"] == {"size": 1, "all_cases": False, "rule": "first 1 case ids in sorted order"}
    assert len(summary["metric_per_case"]) == len(m.role("eval1", "eval2"))
    assert f"{rows[1][1]}" == f"{summary['sets']['eval1']['implant']['dsc']['all']['mean']:.4f}"


def test_bad_predictions_are_recorded_and_the_rest_evaluated(tmp_path, manifest, predictions):
    bad = tmp_path / "bad"
    shutil.copytree(predictions, bad)
    index = json.loads((bad / "predictions.json").read_text())
    ids = sorted(index["cases"])
    assert len(ids) == 3
    missing, wrong_shape, non_binary = ids
    (bad / index["cases"][missing]["files"]["complete"]).unlink()
    write_volume(bad / index["cases"][wrong_shape]["files"]["implant"], np.zeros((10, 10, 10), np.uint8))
    img = to_array(read_image(bad / index["cases"][non_binary]["files"]["complete"])).astype(np.uint8) * 2
    write_volume(bad / index["cases"][non_binary]["files"]["complete"], img)
    out = tmp_path / "eval"
    # every case failed: the reports are still written, and the exit status says nothing was scored
    assert main(["evaluate", str(bad), "--manifest", str(manifest), "--output", str(out), "--quiet"]) == 1
    summary = json.loads((out / "baseline" / "summary.json").read_text())
    errors = {r["case"]: r["error"] for r in summary["metric_per_case"] if "error" in r}
    assert "file not found" in errors[missing]
    assert "size/spacing (10, 10, 10)" in errors[wrong_shape]
    assert "non-binary values [0, 2]" in errors[non_binary]
    assert sum(s["failed"] for s in summary["sets"].values()) == 3
    # per-case results were written as they finished, and a rerun reuses them
    assert all((out / "baseline" / "cases" / f"{i}.json").is_file() for i in ids)
    shutil.copyfile(predictions / index["cases"][missing]["files"]["complete"], bad / index["cases"][missing]["files"]["complete"])
    # no --force: the restored file differs from what the cached result saw, so that case is evaluated again
    assert main(["evaluate", str(bad), "--manifest", str(manifest), "--output", str(out), "--quiet"]) == 0
    summary = json.loads((out / "baseline" / "summary.json").read_text())
    assert sum(s["failed"] for s in summary["sets"].values()) == 2


def test_a_missed_case_worsens_the_average(tmp_path, manifest, predictions):
    empty = tmp_path / "empty"
    shutil.copytree(predictions, empty)
    index = json.loads((empty / "predictions.json").read_text())
    first = sorted(index["cases"])[0]
    path = empty / index["cases"][first]["files"]["implant"]
    ref = read_image(path)
    write_volume(path, np.zeros(to_array(ref).shape, np.uint8), ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection())
    assert (
        main(["evaluate", f"ok={predictions}", f"missed={empty}", "--manifest", str(manifest), "--output", str(tmp_path / "e"), "--quiet"])
        == 0
    )
    ok = json.loads((tmp_path / "e" / "ok" / "summary.json").read_text())
    missed = json.loads((tmp_path / "e" / "missed" / "summary.json").read_text())
    role = next(r["set"] for r in missed["metric_per_case"] if r["case"] == first)
    case = next(r for r in missed["metric_per_case"] if r["case"] == first)
    assert case["implant"]["empty"] == "prediction" and case["implant"]["empty_policy"] == "diagonal"
    assert missed["sets"][role]["implant"]["hd95"]["all"]["mean"] >= ok["sets"][role]["implant"]["hd95"]["all"]["mean"]
    assert missed["sets"][role]["implant"]["dsc"]["all"]["mean"] <= ok["sets"][role]["implant"]["dsc"]["all"]["mean"]
    assert missed["sets"][role]["empty_predictions"] == 1
