"""End to end: the demo pipeline at a tiny size and the flatness command (the sweep and the study have files of their own)."""

import csv
import json
import re

import numpy as np
import pytest

from fam_skull.cli import main

HEADER = [f"set {s}: {m}{sub}" for s in (1, 2) for m in ("DSC", "HD", "HD95") for sub in ("", " (100)")]


def test_demo_from_the_cli_at_a_tiny_size(tmp_path, capsys):
    overrides = [
        "prepare.synthetic=5",
        "prepare.synthetic_shape=[32,32,16]",
        "prepare.grid=[32,32,16]",
        "prepare.workers=1",
        "run.model.channels=[4,8,16,32]",
        "run.train.epochs=1",
        "run.train.val_every=1",
        "run.fam.warmup_steps=0",
    ]
    assert main(["demo", "--output", str(tmp_path / "demo"), "--quiet", *overrides]) == 0
    printed = capsys.readouterr().out
    report = tmp_path / "demo" / "report"
    rows = list(csv.reader((report / "sweep_table.csv").read_text().splitlines()))
    assert rows[0] == ["method", *HEADER]
    assert [r[0] for r in rows[1:]] == ["baseline", "baseline + refinement", "FAM, lambda = 3", "FAM, lambda = 3 + refinement"]
    assert all(re.fullmatch(r"\d+\.\d+", cell) for r in rows[1:] for cell in r[1:])
    text = (report / "report.md").read_text()
    for needle in ("| method |", "curves_baseline_s0.png", "boxplots.png", "overlays_FAM_lambda_3.png", "boundary DSC"):
        assert needle in text
    for name in ("boxplots.png", "curves_fam_3_s0.png", "curves_fam_3_refined_s0.png", "overlays_baseline_refinement.png"):
        assert (report / name).is_file()
    assert "| baseline |" in printed and "report.md" in printed


def test_flatness_command(tmp_path, manifest, trained_run, capsys):
    out = tmp_path / "kappa.json"
    assert main(["flatness", "--run", str(trained_run), "--manifest", str(manifest), "--probes", "2", "--output", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 8 and result["ci95"][0] <= result["kappa"] <= result["ci95"][1]
    assert abs(sum(result["per_case"].values()) / 8 - result["kappa"]) < 1e-12
    # the 95% interval of a mean of 8: +- t(0.975, 7) = 2.364624 standard errors (a table value), not 1.96
    values = np.array(list(result["per_case"].values()))
    half = (result["ci95"][1] - result["ci95"][0]) / 2
    assert half == pytest.approx(2.364624 * values.std(ddof=1) / np.sqrt(8), rel=1e-6)
    assert "baseline: kappa(bottleneck) =" in capsys.readouterr().out
    # each case's value is relative_flatness (checked against a brute-force Hessian in test_flatness.py) of that
    # case alone, with the command's probe stream: read the case back from its files, not through the command's loader
    import torch

    from data_prep.io import read_image, to_array
    from data_prep.manifest import Manifest
    from fam_skull.fam.flatness import relative_flatness
    from fam_skull.networks.trained import load_run
    from fam_skull.train.loss import build_loss

    model, config, _, _ = load_run(trained_run)
    data = Manifest.load(manifest)
    generator = torch.Generator().manual_seed(0)
    for case in data.role("train"):

        def volume(kind, case=case):
            return torch.from_numpy(to_array(read_image(data.file(case, "grid", kind))).astype("float32"))[None, None]

        kappa = relative_flatness(
            model, "bottleneck", build_loss(config), volume("defective"), volume("implant"), probes=2, generator=generator
        )
        assert result["per_case"][case["id"]] == pytest.approx(float(kappa.detach()), rel=1e-6, abs=1e-12), case["id"]
