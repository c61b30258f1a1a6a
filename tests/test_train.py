"""Training from the CLI: each method and model, the run folder, exact resume, torchrun, and bad configs."""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import TINY_UNET, write_config

from fam_skull.checkpoint import load_checkpoint
from fam_skull.cli import main

MODELS = {
    "unet": TINY_UNET,
    "autoencoder": {"name": "autoencoder", "channels": [4, 8, 8], "strides": [2, 2, 2], "num_res_units": 0},
    "linear_ae": {"name": "linear_ae", "channels": [4, 8, 8], "strides": [2, 2, 2], "num_res_units": 0, "latent_size": 8},
}


def config_file(tmp_path, manifest, method="baseline", model="unet", **extra):
    return write_config(tmp_path, manifest, method, MODELS[model], f"run_{method}_{model}", **extra)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", ["baseline", "fam", "sam"])
def test_two_epoch_run_leaves_a_complete_run_folder(tmp_path, manifest, method, model):
    path, out = config_file(tmp_path, manifest, method, model)
    assert main(["train", str(path), "--quiet"]) == 0
    run = tmp_path / f"run_{method}_{model}"
    for name in ("config.yaml", "log.txt", "metrics.csv", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt", "checkpoints/epoch_0001.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"loss", "kappa", "val_dsc", "step_time"} <= set(header)
    kappas = [r.split(",")[header.index("kappa")] for r in rows[1:]]
    assert all(kappas) if method == "fam" else not any(kappas)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and yaml.safe_load(state["config"])["method"] == method
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    assert "epoch 2:" in (run / "log.txt").read_text()


def test_resume_ends_with_the_same_weights(tmp_path, manifest):
    path, out = config_file(tmp_path, manifest, "fam", optim={"scheduler": "poly"})
    assert main(["train", str(path), f"output={tmp_path / 'straight'}", "--quiet"]) == 0
    assert main(["train", str(path), f"output={tmp_path / 'stopped'}", "train.epochs=1", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["epoch"] == 1
    assert main(["train", str(path), f"output={tmp_path / 'stopped'}", "--quiet"]) == 2  # never overwrites a run
    assert main(["train", "train.epochs=2", "--resume", str(tmp_path / "stopped"), "--quiet"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert b["epoch"] == 2 and len(b["history"]) == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["regularizer"]["step"] == b["regularizer"]["step"] == 8  # 2 epochs x 4 batches of 2
    assert a["history"][1]["loss"] == b["history"][1]["loss"]
    assert a["history"][1]["lr"] == b["history"][1]["lr"] < a["history"][0]["lr"] == 1e-3  # the schedule resumed too


def test_torchrun_two_processes_match_one(tmp_path, manifest):
    # SGD: Adam divides by sqrt(v) and turns float32 rounding noise in ~zero gradients (conv biases before
    # InstanceNorm) into full-size steps, which would hide a real mismatch behind noise
    path, _ = config_file(tmp_path, manifest, "fam", optim={"name": "sgd", "lr": 0.05})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "fam_skull",
           "train", str(path), f"output={tmp_path / 'ddp'}", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["train", str(path), f"output={tmp_path / 'single'}", "--quiet"]) == 0
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert [h["rank_spread"] for h in ddp["history"]] == [0.0, 0.0]
    assert "2 process(es)" in (tmp_path / "ddp" / "log.txt").read_text()
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown key train.epoch (did you mean train.epochs?)"),
        ("train.epochs=five", "train.epochs: expected int, got str 'five'"),
        ("data.manifest=/nowhere/manifest.json", "data.manifest: /nowhere/manifest.json: manifest not found"),
        ("fam.lam=-0.1", "fam.lam: must be >= 0, got -0.1"),
        ("fam.layer=model.77", "fam.layer: FAM layer 'model.77' is not a Linear/ConvNd/ConvTransposeNd"),
        ("method=adam", "method: must be one of baseline, fam, sam"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, manifest, capsys, override, message):
    path, out = config_file(tmp_path, manifest, "fam")
    assert main(["train", str(path), override, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(out)


def test_non_finite_steps_stop_the_run(tmp_path, manifest, monkeypatch):
    import fam_skull.train as train_module
    from fam_skull.train import TrainingError, train

    monkeypatch.setattr(train_module, "build_loss", lambda cfg: lambda outputs, targets: outputs.sum() * float("nan"))
    path, out = config_file(tmp_path, manifest, "baseline", train={"max_nonfinite": 2})
    with pytest.raises(TrainingError, match="2 non-finite steps in a row"):
        train(path, quiet=True)
    assert not (tmp_path / "run_baseline_unet" / "checkpoints" / "last.pt").exists()
    assert "non-finite loss" in (tmp_path / "run_baseline_unet" / "log.txt").read_text()
