"""fam-skull sweep: which runs a sweep config means, what it refuses before training, seed-averaged tables,
and reruns that train only what is missing."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import TINY_UNET

from fam_skull.cli import main
from fam_skull.common.checkpoint import load_checkpoint
from fam_skull.common.paths import RunFolder
from fam_skull.config import Config, ConfigError
from fam_skull.experiments.sweep import _runs, load_sweep
from fam_skull.fam.regularizer import DEFAULT_LAMBDA, DEFAULT_OBJECTIVE
from fam_skull.fam.sam import DEFAULT_RHO

RUN = {"data": {"manifest": "data/manifest.json"}, "train": {"epochs": 3}}


def _plan(sweep: dict, run: dict = RUN) -> list[tuple[str, str, int, Config]]:
    config, section = load_sweep(values={"sweep": {"output": "out", **sweep}, "run": run})
    return [(folder, label, seed, cfg) for folder, label, seed, cfg in _runs(config, section)]


def test_default_arms_are_baseline_fam_at_each_lambda_and_sam():
    plan = _plan({"lams": [0.5, 5], "seeds": [1, 2], "sam": True})
    arms = ("baseline", "fam_0.5", "fam_5", f"sam_{DEFAULT_RHO:g}")
    assert [folder for folder, *_ in plan] == [f"{arm}_s{seed}" for seed in (1, 2) for arm in arms]
    for folder, _, seed, cfg in plan:
        assert cfg.train.seed == seed and cfg.train.epochs == 3
        assert Path(cfg.output) == Path("out") / "runs" / folder
    by_folder = {folder: (label, cfg) for folder, label, _, cfg in plan}
    label, cfg = by_folder["fam_5_s2"]
    assert (cfg.method, cfg.fam.lam, cfg.fam.objective, label) == ("fam", 5.0, DEFAULT_OBJECTIVE, "FAM, lambda = 5")
    label, cfg = by_folder[f"sam_{DEFAULT_RHO:g}_s1"]
    assert (cfg.method, cfg.sam.rho, label) == ("sam", DEFAULT_RHO, f"SAM, rho = {DEFAULT_RHO:g}")
    assert by_folder["baseline_s1"][1].method == "baseline"


def test_default_lambdas_bracket_the_default_and_the_run_section_picks_the_objective():
    plan = _plan({"baseline": False}, {**RUN, "fam": {"objective": "kappa"}})
    assert [cfg.fam.lam for *_, cfg in plan] == pytest.approx([DEFAULT_LAMBDA / 10, DEFAULT_LAMBDA, DEFAULT_LAMBDA * 10])
    assert {cfg.fam.objective for *_, cfg in plan} == {"kappa"}
    assert plan[0][1] == f"FAM (kappa), lambda = {DEFAULT_LAMBDA / 10:g}"


def test_listed_arms_set_their_keys_and_keep_their_names():
    arms = [{"name": "implant target", "set": {"model.target": "implant"}}, {"name": "FAM 0.1", "set": {"method": "fam", "fam.lam": 0.1}}]
    plan = _plan({"arms": arms})
    assert [(folder, label) for folder, label, *_ in plan] == [("implant_target_s0", "implant target"), ("FAM_0.1_s0", "FAM 0.1")]
    assert plan[0][3].model.target == "implant" and plan[0][3].method == "baseline"
    assert (plan[1][3].method, plan[1][3].fam.lam) == ("fam", 0.1)


def test_refinement_follows_each_arm_on_top_of_its_coarse_run():
    plan = _plan({"lams": [], "refine": {"refine.patch": [16, 16, 8], "train.epochs": 2}, "seeds": [4]})
    names = [(folder, label) for folder, label, *_ in plan]
    assert names == [("baseline_s4", "baseline"), ("baseline_refined_s4", "baseline + refinement")]
    coarse, refined = plan[0][3], plan[1][3]
    assert (refined.stage, refined.method, refined.train.epochs, refined.train.seed) == ("refine", "baseline", 2, 4)
    assert refined.refine.coarse_run == coarse.output and list(refined.refine.patch) == [16, 16, 8]
    assert coarse.stage == "coarse" and coarse.train.epochs == 3


def test_an_arms_refine_keys_act_on_its_refinement_run_only():
    arms = [{"name": "plain", "set": {}}, {"name": "fresh", "set": {"augment.elastic": 0.3, "refine.fresh_defects": 4}}]
    plan = {folder: cfg for folder, _, _, cfg in _plan({"arms": arms, "refine": {"refine.patch": [16, 16, 8]}})}
    assert plan["fresh_refined_s0"].refine.fresh_defects == 4 and list(plan["fresh_refined_s0"].refine.patch) == [16, 16, 8]
    assert plan["plain_refined_s0"].refine.fresh_defects == 0
    assert plan["fresh_s0"].augment.elastic == 0.3 and plan["fresh_refined_s0"].augment.elastic == 0.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sweep": {}, "run": RUN, "runs": {}}, r"unknown top-level key\(s\) \['runs'\]"),
        ({"sweep": {"lams": [1.0, -1.0]}, "run": RUN}, "sweep.lams: every lambda must be >= 0"),
        ({"sweep": {"seed": [0]}, "run": RUN}, r"unknown key sweep.seed \(did you mean sweep.seeds\?\)"),
        ({"sweep": {"arms": [{"name": "a", "sett": {}}]}, "run": RUN}, r"sweep.arms\[0\]: expected \{name"),
        ({"sweep": {"arms": [{"name": "a b"}, {"name": "a_b"}]}, "run": RUN}, "sweep.arms: two arms share a name"),
        # a misspelt key in an arm or the run section fails at load, before any run trains
        ({"sweep": {"arms": [{"name": "a", "set": {"fam.lamb": 1}}]}, "run": RUN}, r"unknown key fam.lamb \(did you mean fam.lam\?\)"),
        ({"sweep": {}, "run": {**RUN, "train": {"epoch": 3}}}, r"unknown key train.epoch"),
        ({"sweep": {"refine": {"refine.pach": [8, 8, 8]}}, "run": RUN}, r"unknown key refine.pach"),
        # a study compares arms with the first: with one arm it trained everything, then crashed while writing it
        ({"sweep": {"study": True, "arms": [{"name": "only", "set": {}}]}, "run": RUN}, "sweep.study: compares every arm with the first"),
        ({"sweep": {"study": True, "lams": [], "sam": False}, "run": RUN}, r"needs at least two arms, got 1"),
    ],
)
def test_bad_sweep_configs_are_refused_at_load(values, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(values=values)


def test_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"{re.escape(str(tmp_path / 'none.yaml'))}: sweep config not found"):
        load_sweep(tmp_path / "none.yaml")


def test_sweep_two_lambdas_two_seeds_gives_mean_and_std(tmp_path, manifest, capsys):
    cfg = {
        "sweep": {"output": str(tmp_path / "sweep"), "lams": [0.001, 0.01], "seeds": [0, 1], "baseline": False, "min_component_mm3": 0},
        "run": {"data": {"manifest": str(manifest), "batch_size": 2}, "model": TINY_UNET, "train": {"epochs": 1, "threads": 1}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--quiet"]) == 0
    report = tmp_path / "sweep" / "report"
    rows = list(csv.reader((report / "sweep_table.csv").read_text().splitlines()))
    assert [r[0] for r in rows[1:]] == ["FAM, lambda = 0.001 (2 seeds)", "FAM, lambda = 0.01 (2 seeds)"]
    assert all(re.fullmatch(r"\d+\.\d+ ± \d+\.\d+", cell) for r in rows[1:] for cell in r[1:])
    # the cell is the mean over seeds of the per-run means
    runs = {s: json.loads((report / f"FAM_lambda_0.001_seed_{s}" / "summary.json").read_text()) for s in (0, 1)}
    dsc = [runs[s]["sets"]["eval1"]["implant"]["dsc"]["all"]["mean"] for s in (0, 1)]
    assert rows[1][1].startswith(f"{sum(dsc) / 2:.4f} ± ")
    assert "## Paper table (implants, mean ± std over seeds)" in (report / "report.md").read_text()

    # a rerun trains nothing again; a longer schedule resumes every run where it stopped instead of starting over
    last = tmp_path / "sweep" / "runs" / "fam_0.01_s1" / "checkpoints" / "last.pt"
    stamp = last.stat().st_mtime
    assert main(["sweep", str(path), "--quiet"]) == 0
    assert last.stat().st_mtime == stamp
    first_epoch = (tmp_path / "sweep" / "runs" / "fam_0.01_s1" / "metrics.csv").read_text().splitlines()[1]
    assert main(["sweep", str(path), "run.train.epochs=2", "--quiet"]) == 0
    assert load_checkpoint(last)["epoch"] == 2
    metrics = (tmp_path / "sweep" / "runs" / "fam_0.01_s1" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and metrics[1] == first_epoch
    log = RunFolder(tmp_path / "sweep" / "runs" / "fam_0.01_s1").log.read_text()
    assert "epochs 2-2" in log and "epochs 1-1" in log  # the first session's epoch was kept, not trained again
    # a setting the runs were not trained with is refused, naming the key, whether a run is finished or not
    assert main(["sweep", str(path), "run.optim.name=sgd", "--quiet"]) == 2
    assert "optim.name ('adam' -> 'sgd') cannot change on resume" in capsys.readouterr().err
    assert main(["sweep", str(path), "run.train.epochs=3", "run.optim.name=sgd", "--quiet"]) == 2
    assert "optim.name ('adam' -> 'sgd') cannot change on resume" in capsys.readouterr().err
    assert load_checkpoint(last)["epoch"] == 2
