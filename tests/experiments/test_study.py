"""study.py: paired differences, per-case tests and flatness of a finished multi-seed sweep, and the flatness cache."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import yaml
from helpers import TINY_UNET
from scipy import stats

from fam_skull.cli import main
from fam_skull.common.paths import RunFolder
from fam_skull.experiments import study


def test_study_of_two_arms_over_two_seeds(tmp_path, manifest):
    """The study machinery at CI size: its paired differences and per-case test, recomputed from per_case.csv."""
    arms = [
        {"name": "reference", "set": {"method": "baseline"}},
        {"name": "fisher", "set": {"method": "fam", "fam.objective": "fisher", "fam.lam": 1.0}},
    ]
    cfg = {
        "sweep": {
            "output": str(tmp_path / "study"),
            "seeds": [0, 1],
            "arms": arms,
            "study": True,
            "study_flatness_cases": 3,
            "min_component_mm3": 0,
        },
        "run": {"data": {"manifest": str(manifest), "batch_size": 2}, "model": TINY_UNET, "train": {"epochs": 2, "threads": 1}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--quiet"]) == 0
    report = tmp_path / "study" / "report"
    dsc = {}  # (arm, seed, set) -> {case: implant DSC}
    for row in csv.DictReader((report / "per_case.csv").read_text().splitlines()):
        if row["target"] == "implant":
            arm, seed = row["method"].rsplit(", seed ", 1)
            dsc.setdefault((arm, int(seed), row["set"]), {})[row["case"]] = float(row["dsc"])
    rows = {(r["arm"], r["set"], r["metric"]): r for r in csv.DictReader((report / "study_differences.csv").read_text().splitlines())}
    assert len(rows) == 4  # one arm against the reference, two sets, two metrics
    for s in ("eval1", "eval2"):
        diffs = [np.mean(list(dsc[("fisher", k, s)].values())) - np.mean(list(dsc[("reference", k, s)].values())) for k in (0, 1)]
        r = rows[("fisher", s, "dsc")]
        assert float(r["difference"]) == pytest.approx(np.mean(diffs), abs=1e-12)
        half = 12.706 * np.std(diffs, ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
        assert float(r["ci_high"]) - float(r["ci_low"]) == pytest.approx(2 * half, rel=1e-3)
        cases = sorted(dsc[("fisher", 0, s)])
        a = [np.mean([dsc[("fisher", k, s)][c] for k in (0, 1)]) for c in cases]
        b = [np.mean([dsc[("reference", k, s)][c] for k in (0, 1)]) for c in cases]
        if len(cases) > 1 and a != b:  # one case cannot be tested: recorded as n/a
            assert float(r["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)
    flat = list(csv.DictReader((report / "study_flatness.csv").read_text().splitlines()))
    assert len(flat) == 2 * 2 * 2 * 2  # arms x seeds x sets x (kappa, kappa_F)
    assert all(float(f["value"]) >= 0 for f in flat if f["objective"] == "fisher")
    for name in ("study_forest.png", "study_curves.png", "study.md"):
        assert (report / name).is_file()
    assert "| fisher | eval1 | implant dsc |" in (report / "report.md").read_text()


def test_flatness_cache_follows_the_weights(tmp_path, manifest, trained_run, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    runs = [study.StudyRun("baseline", 0, run, {})]
    first = study.flatness_on_sets(runs, manifest, ["eval1"], max_cases=2, probes=1)
    measured = json.loads((run / "flatness_eval1_kappa.json").read_text())
    assert measured["n"] == 2 and measured["kappa"] == first[0]["value"]

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although nothing changed")

    monkeypatch.setattr(study, "measure_flatness", no_measuring)
    assert study.flatness_on_sets(runs, manifest, ["eval1"], max_cases=2, probes=1) == first
    calls = []
    monkeypatch.setattr(study, "measure_flatness", lambda *a, **k: calls.append(k["objective"]) or _report(k["objective"]))
    study.flatness_on_sets(runs, manifest, ["eval1"], max_cases=3, probes=1)  # more cases: another measurement
    assert calls == ["kappa", "fisher"]
    weights = RunFolder(run).checkpoint("best") if RunFolder(run).checkpoint("best").is_file() else RunFolder(run).checkpoint("last")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # retrained (or replaced) weights
    rows = study.flatness_on_sets(runs, manifest, ["eval1"], max_cases=3, probes=1)
    assert calls == ["kappa", "fisher"] * 2 and [r["value"] for r in rows] == [1.5, 2.5]
    (run / "flatness_eval1_kappa.json").write_text("{damaged")
    study.flatness_on_sets(runs, manifest, ["eval1"], max_cases=3, probes=1)
    assert calls[-1:] == ["kappa"] and len(calls) == 5


def _report(objective):
    from fam_skull.experiments.flatness import FlatnessReport

    return FlatnessReport("baseline", "bottleneck", objective, 1.5 if objective == "kappa" else 2.5, (1.0, 2.0), {"a": 1.5})


@pytest.mark.parametrize("validations, panels", [(1, 2), (3, 3)])
def test_the_validation_panel_is_drawn_only_for_a_curve(tmp_path, monkeypatch, validations, panels):
    runs = []
    for arm in ("reference", "fam"):
        folder = tmp_path / arm
        folder.mkdir()
        rows = ["epoch,task_loss,val_implant_dsc,kappa_F"]
        for epoch in range(1, 7):
            validated = epoch > 6 - validations
            rows.append(f"{epoch},{1 / epoch},{0.1 * epoch if validated else ''},{0.01 * epoch}")
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
        runs.append(study.StudyRun(arm, 0, folder, {}))
    drawn = []
    monkeypatch.setattr(study, "save_figure", lambda fig, path: drawn.append(fig))
    study._curves(runs, tmp_path / "curves.png")
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert len(titles) == panels
    assert any("validation" in t for t in titles) == (validations > 1)
    assert [len(ax.get_lines()) for ax in drawn[0].axes] == [2] * panels
