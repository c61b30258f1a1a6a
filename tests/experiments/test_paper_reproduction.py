"""configs/paper_reproduction.yaml: the seed's setup scaled down (its network keeps the published FAM layer), and
its pipeline at CI size: both targets' paper tables with the seed's rows, distances in mm and in voxels, the study."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from medpy.metric import binary

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from fam_skull.cli import main
from fam_skull.config import apply, load_config
from fam_skull.experiments.flatness import match_strengths
from fam_skull.fam.flatness import resolve_layer
from fam_skull.networks.models import model_from_config
from fam_skull.networks.trained import load_run
from fam_skull.train.data import items, transforms
from fam_skull.train.loss import build_loss

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "paper_reproduction.yaml"


def test_the_scaled_network_keeps_the_published_fam_layer():
    values = yaml.safe_load(CONFIG.read_text())
    assert values["prepare"]["grid"] == [64, 64, 32]
    for arm in values["sweep"]["arms"]:
        cfg = load_config(base=apply(values["run"], {**arm["set"], "data.manifest": "unused.json"}))
        model = model_from_config(cfg, tuple(values["prepare"]["grid"]))
        ref = resolve_layer(model, cfg.fam.layer)
        assert ref.module is model.decode_latent  # the paper's decodeL
        assert tuple(ref.weight.shape) == (256, 32)  # Linear(32 -> 256): out x in
    out = model(torch.zeros(1, 1, *values["prepare"]["grid"]))
    assert out.shape == (1, 2, 64, 64, 32)


def test_paper_reproduction_at_ci_size(tmp_path):
    arms = yaml.safe_load(CONFIG.read_text())["sweep"]["arms"]
    published = next(a for a in arms if a["set"].get("fam.objective") == "published" and a["set"]["fam.lam"] == 0.002)
    overrides = [
        "prepare.synthetic=6",
        "prepare.synthetic_shape=[32,32,16]",
        "prepare.grid=[32,32,16]",
        "prepare.val_fraction=0.17",
        "prepare.eval_fraction=0.34",
        "prepare.workers=1",
        "sweep.seeds=[0]",
        "sweep.study_flatness_cases=2",
        f"sweep.arms={json.dumps([arms[0], published])}",
        "run.train.epochs=2",
        "run.train.val_every=2",
        "run.train.threads=1",
    ]
    out = tmp_path / "repro"
    assert main(["demo", "--config", str(CONFIG), "--output", str(out), "--quiet", *overrides]) == 0
    report = out / "report"
    for run in sorted((out / "runs").iterdir()):  # the sweep's post-processing reached predict: raw output, as scored
        weights = json.loads((run / "predictions" / "predictions.json").read_text())["weights"]
        assert weights["rim_mm"] is None and weights["stray_mm"] is None and weights["min_component_mm3"] == 0, run.name
    rows = list(csv.reader((report / "sweep_table.csv").read_text().splitlines()))
    assert rows[0][:2] == ["method", "set 1: DSC"]
    labels = [r[0] for r in rows[1:]]
    assert labels == ["paper: baseline", "paper: FAM, lambda = 0.002", "baseline", "FAM published, lambda = 0.002"]
    assert rows[1][1:3] == ["0.6464", "-"] and rows[2][7] == "-"  # the seed's set 1 DSC; no (100) column, no set 2
    text = (report / "report.md").read_text()
    assert "Metrics of the completed skull; HD and HD95 in mm" in text and "of the completed skull; HD and HD95 in voxels" in text
    assert "| FAM published, lambda = 0.002 | eval2 | completed skull dsc |" in text
    for name in ("sweep_table_implant.md", "sweep_table_voxels.md", "sweep_table_implant_voxels.md", "study_curves.png"):
        assert (report / name).is_file()
    # one case scored by medpy itself, in mm (the scan's spacing) and in voxels (no spacing)
    case = json.loads(next((out / "report_voxels" / "baseline" / "cases").glob("*.json")).read_text())
    in_mm = json.loads((out / "report" / "baseline" / "cases" / f"{case['case']}.json").read_text())
    pred_image = read_image(case["prediction_files"]["complete"])
    pred = to_array(pred_image).astype(bool)
    gt = to_array(read_image(case["reference_files"]["complete"])).astype(bool)
    assert case["complete"]["hd"] == pytest.approx(binary.hd(pred, gt), abs=1e-9)
    assert case["complete"]["hd95"] == pytest.approx(binary.hd95(pred, gt), abs=1e-9)
    assert in_mm["complete"]["hd95"] == pytest.approx(binary.hd95(pred, gt, voxelspacing=pred_image.GetSpacing()), abs=1e-9)


def test_matched_strengths_equal_the_pull_of_the_reference(manifest, trained_run):
    m = match_strengths(trained_run, manifest, ("l2", 0.5), ("published",), max_cases=2, probes=1, checkpoint="last", quiet=True)
    # the L2 ratio by hand: grad of ||W||^2 is 2W, against the task gradient on each case
    model, config, _, _ = load_run(trained_run, "last")
    weight = resolve_layer(model, config.fam.layer).weight
    load, loss_fn = transforms(), build_loss(config)
    ratios = []
    for entry in items(Manifest.load(manifest), "train")[:2]:
        item = load(entry)
        (g,) = torch.autograd.grad(loss_fn(model(item["image"][None]), item[config.model.target][None]), weight)
        ratios.append(float(2 * weight.detach().norm() / g.norm()))
    assert m.ratio["l2"] == pytest.approx(np.mean(ratios), rel=1e-5)
    assert m.lam["l2"] == 0.5
    assert m.lam["published"] * m.ratio["published"] == pytest.approx(0.5 * m.ratio["l2"], rel=1e-9)
