"""Hostile and broken input to train, table by table: each row must give its exit status and one message naming
the file, case or key; the good cases are still done, nothing lands outside the output folder, and nothing already
computed is lost (the shared checks: helpers.assert_refused). docs/reliability.md lists the same checks."""

import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_UNET, manifest_variant, refusal_test, write_config

from fam_skull.cli import main
from fam_skull.common.checkpoint import load_checkpoint, save_checkpoint


def _drop_a_volume(data):
    data["cases"] = [dict(c, grid=dict(c["grid"], defective="grid/gone.nii.gz")) if c["role"] == "train" else c for c in data["cases"]]


# name -> (argv built from the test's folders, exit status, message pattern)
REFUSALS = {
    "manifest names a missing volume": (
        lambda t: [
            "train",
            str(t["config"]),
            f"data.manifest={manifest_variant(t['tmp'], t['manifest'], _drop_a_volume)}",
            f"output={t['out']}",
        ],
        2,
        r"data\.manifest: \d+ volume\(s\) it names are missing, e\.g\. case synth\w+ grid defective \(.*gone\.nii\.gz\)",
    ),
    "infinite learning rate": (
        lambda t: ["train", str(t["config"]), "optim.lr=.inf", f"output={t['out']}"],
        2,
        r"optim\.lr: must be a finite number, got inf",
    ),
}


test_bad_arguments_are_refused_before_any_work = refusal_test(REFUSALS)


def test_a_warmup_longer_than_the_run_is_named(tmp_path, manifest, capsys):
    config, _ = write_config(tmp_path, manifest, "fam", TINY_UNET, "run")
    assert main(["train", str(config), "fam.warmup_steps=1000", "train.epochs=1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"fam\.warmup_steps 1000 >= the \d+ steps of this run: FAM never switches on", err), err


# name -> (overrides, message pattern); each run diverges in its first epoch
DIVERGENCE = {
    "huge learning rate": (["optim.lr=1e30"], r"epoch 1 step 1: a weight reached [\d.e+]+ \(train\.max_weight 1e\+06\), training diverged"),
    "huge lambda": (
        ["method=fam", "fam.objective=kappa", "fam.lam=1e38", "train.max_nonfinite=2"],
        r"2 non-finite steps in a row \(epoch 1\)",
    ),
}


@pytest.mark.parametrize("name", list(DIVERGENCE))
def test_divergence_stops_without_saving_garbage(name, tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    overrides, pattern = DIVERGENCE[name]
    assert main(["train", str(config), *overrides, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert "no checkpoint was written (it diverged in the first epoch)" in err
    assert not list(Path(out).rglob("*.pt"))


def test_divergence_after_a_good_epoch_keeps_it(tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    assert main(["train", str(config), "train.epochs=1", "--quiet"]) == 0
    before = (Path(out) / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", "--resume", out, "train.epochs=2", "optim.lr=1e30", "--quiet"]) == 1
    assert f"the last good checkpoint is {out}/checkpoints/last.pt" in capsys.readouterr().err
    assert (Path(out) / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_applies_the_keys_that_may_change_and_refuses_the_others(tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    assert main(["train", str(config), "train.epochs=1", "--quiet"]) == 0
    assert main(["train", "--resume", out, "model.channels=[8,16,32]", "train.epochs=2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.channels ([4, 8, 16] -> [8, 16, 32]) cannot change on resume" in err
    assert load_checkpoint(Path(out) / "checkpoints" / "last.pt")["epoch"] == 1
    # a baseline coarse run never reads fam.* or refine.*: changing them changes nothing it was trained with
    unused = ["fam.objective=kappa", "refine.margin_mm=5"]
    assert main(["train", "--resume", out, "train.epochs=2", "optim.lr=0.0005", *unused, "--quiet"]) == 0
    state = load_checkpoint(Path(out) / "checkpoints" / "last.pt")
    assert state["epoch"] == 2
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0005)
    assert yaml.safe_load((Path(out) / "config.yaml").read_text())["optim"]["lr"] == 0.0005


# name -> how the run's last.pt is damaged, and the message
BAD_CHECKPOINTS = {
    "another architecture": (
        lambda s: s.update(model={k: torch.zeros(1) for k in s["model"]}),
        r"last\.pt: does not fit this run's config\.yaml \(missing entry or another model: Error",
    ),
    "no optimizer entry": (
        lambda s: s.pop("optimizer"),
        r"last\.pt: does not fit this run's config\.yaml \(missing entry or another model: 'optimizer'\)",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_resume_from_a_checkpoint_that_does_not_fit(name, tmp_path, manifest, capsys):
    config, out = write_config(tmp_path, manifest, "baseline", TINY_UNET, "run")
    assert main(["train", str(config), "train.epochs=1", "--quiet"]) == 0
    last = Path(out) / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    damage, pattern = BAD_CHECKPOINTS[name]
    damage(state)
    save_checkpoint(state, last)
    assert main(["train", "--resume", out, "train.epochs=2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
