"""Training from the CLI: each method and model, the run folder, exact resume, torchrun, and bad configs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_UNET, write_config

from fam_skull.cli import main
from fam_skull.common.checkpoint import load_checkpoint

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
    for name in (
        "config.yaml",
        "log.txt",
        "metrics.csv",
        "curves.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/epoch_0001.pt",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"loss", "val_implant_dsc", "val_implant_hd95", "val_skull_dsc", "step_time"} <= set(header)
    # the regularizer's column is named for what it holds: kappa_F under the default fisher objective, none without FAM
    assert "kappa" not in header
    if method == "fam":
        assert all(r.split(",")[header.index("kappa_F")] for r in rows[1:])
        assert "kappa_F" in (run / "log.txt").read_text()
    else:
        assert "kappa_F" not in header
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and yaml.safe_load(state["config"])["method"] == method
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    assert "epoch 2:" in (run / "log.txt").read_text()


def test_resume_ends_with_the_same_weights(tmp_path, manifest):
    # every augmentation on: fresh defects, flips, affine, elastic, crops and thick slices are drawn from (seed,
    # epoch, item) alone; dropout draws from torch's global RNG, which the checkpoint restores
    augment = {"fresh_defect": 1.0, "flip": 0.5, "affine": 0.5, "elastic": 0.5, "crop": 0.5, "thick_slices": 0.5}
    path, out = config_file(tmp_path, manifest, "fam", optim={"scheduler": "poly"}, augment=augment)
    assert main(["train", str(path), f"output={tmp_path / 'straight'}", "model.dropout=0.2", "--quiet"]) == 0
    assert main(["train", str(path), f"output={tmp_path / 'stopped'}", "model.dropout=0.2", "train.epochs=1", "--quiet"]) == 0
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
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "fam_skull",
        "train",
        str(path),
        f"output={tmp_path / 'ddp'}",
        "--quiet",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["train", str(path), f"output={tmp_path / 'single'}", "--quiet"]) == 0
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert [h["rank_spread"] for h in ddp["history"]] == [0.0, 0.0]
    assert "2 process(es)" in (tmp_path / "ddp" / "log.txt").read_text()
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5)


def test_memory_and_kernel_options_train_the_same_weights(tmp_path, manifest, capsys):
    # fam.chunk (passes of one sample) and fam.conv_twins change how the FAM gradient is computed, not what it is;
    # SGD as above, so float32 rounding stays rounding
    path, _ = config_file(tmp_path, manifest, "fam", optim={"name": "sgd", "lr": 0.05}, fam={"objective": "kappa"})
    assert main(["train", str(path), f"output={tmp_path / 'plain'}", "--quiet"]) == 0
    assert main(["train", str(path), f"output={tmp_path / 'options'}", "fam.chunk=1", "fam.conv_twins=true", "--quiet"]) == 0
    plain = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")
    options = load_checkpoint(tmp_path / "options" / "checkpoints" / "last.pt")
    assert [h["kappa"] for h in options["history"]] == pytest.approx([h["kappa"] for h in plain["history"]], rel=1e-4)
    moved = False
    for key, value in plain["model"].items():
        torch.testing.assert_close(options["model"][key], value, rtol=1e-4, atol=1e-5)
        moved |= not torch.equal(value, load_checkpoint(tmp_path / "plain" / "checkpoints" / "epoch_0001.pt")["model"][key])
    assert moved
    # a model whose batch norm couples the samples cannot be split into passes: refused before training
    assert main(["train", str(path), f"output={tmp_path / 'bn'}", "fam.chunk=1", "model.norm=batch", "--quiet"]) == 2
    assert "(BatchNorm3d) couples the samples of a batch" in capsys.readouterr().err
    assert not (tmp_path / "bn" / "checkpoints").exists()


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
    import fam_skull.train.parts as train_module
    from fam_skull.train import TrainingError, train

    monkeypatch.setattr(train_module, "build_loss", lambda cfg: lambda outputs, targets: outputs.sum() * float("nan"))
    path, out = config_file(tmp_path, manifest, "baseline", train={"max_nonfinite": 2})
    with pytest.raises(TrainingError, match="2 non-finite steps in a row"):
        train(path, quiet=True)
    assert not (tmp_path / "run_baseline_unet" / "checkpoints" / "last.pt").exists()
    assert "non-finite loss" in (tmp_path / "run_baseline_unet" / "log.txt").read_text()


def _logits(mask):
    """2-class logits whose argmax is ``mask`` (B, 1, ...) -> (B, 2, ...)."""
    return torch.cat([1 - 2 * mask, 2 * mask - 1], dim=1) * 5.0


@pytest.mark.parametrize("name", ["dice", "dice_ce"])
def test_loss_options_match_a_hand_computation(name):
    from fam_skull.config import Config
    from fam_skull.train.loss import build_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 6, 5, 4, generator=g, dtype=torch.float64)
    target = (torch.rand(2, 1, 6, 5, 4, generator=g) > 0.7).double()
    cfg = Config()
    cfg.loss.name = name
    p = torch.softmax(logits, 1)[:, 1:]  # foreground only: include_background is False by default
    inter, total = (p * target).sum((2, 3, 4)), (p + target).sum((2, 3, 4))
    expected = (1 - (2 * inter + 1e-5) / (total + 1e-5)).mean()  # MONAI's smoothing terms
    if name == "dice_ce":
        expected = expected + torch.nn.functional.cross_entropy(logits, target[:, 0].long())
    torch.testing.assert_close(build_loss(cfg)(logits, target), expected)
    cfg.loss.weight = 80.0
    torch.testing.assert_close(build_loss(cfg)(logits, target), 80 * expected)


def test_fresh_defects_reach_the_training_step(tmp_path, manifest, monkeypatch):
    """With augment.fresh_defect 1 the step sees implants cut afresh, not the prepared ones (the same complete
    skulls, so the completed skull is unchanged)."""
    import fam_skull.train.parts as train_module
    from data_prep.io import read_image, to_array
    from data_prep.manifest import Manifest
    from fam_skull.train import train

    seen = {"implant": 0.0, "complete": 0.0}

    def recording_loss(cfg):
        def loss(outputs, targets):
            seen[cfg.model.target] += float(targets.sum())
            return outputs.mean() * 0

        return loss

    monkeypatch.setattr(train_module, "build_loss", recording_loss)
    fresh = {"fresh_defect": 1.0, "flip": 0.0, "affine": 0.0}
    for target in ("implant", "complete"):
        path, _ = write_config(
            tmp_path, manifest, "baseline", {**TINY_UNET, "target": target}, f"fresh_{target}", augment=fresh, train={"epochs": 1}
        )
        train(path, quiet=True)
    m = Manifest.load(manifest)
    stored = {k: sum(float(to_array(read_image(m.file(c, "grid", k))).sum()) for c in m.role("train")) for k in seen}
    assert seen["complete"] == stored["complete"]
    assert seen["implant"] != stored["implant"]


@pytest.mark.parametrize("target", ["implant", "complete"])
def test_model_target_chooses_what_the_network_learns(tmp_path, manifest, monkeypatch, target):
    import fam_skull.train.parts as train_module
    from data_prep.io import read_image, to_array
    from data_prep.manifest import Manifest

    seen = []

    def recording_loss(cfg):
        def loss(outputs, targets):
            seen.append(float(targets.sum()))
            return outputs.mean() * 0

        return loss

    monkeypatch.setattr(train_module, "build_loss", recording_loss)
    from fam_skull.train import train

    off = {"fresh_defect": 0.0, "flip": 0.0, "affine": 0.0}
    path, _ = write_config(
        tmp_path, manifest, "baseline", {**TINY_UNET, "target": target}, f"run_{target}", augment=off, train={"epochs": 1}
    )
    train(path, quiet=True)
    m = Manifest.load(manifest)
    expected = sum(to_array(read_image(m.file(c, "grid", target))).sum() for c in m.role("train"))
    assert sum(seen) == expected


class _Oracle(torch.nn.Module):
    """Outputs a fixed mask as 2-class logits, whatever its input."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return _logits(self.mask[None])


def _val_case():
    complete = torch.zeros(1, 12, 10, 8)
    complete[:, 2:10, 2:8, 2:6] = 1
    complete[:, 4:8, 4:6, 3:5] = 0  # a hollow box
    implant = torch.zeros_like(complete)
    implant[:, 2:10, 2:8, 5:6] = complete[:, 2:10, 2:8, 5:6]  # the lid
    return {
        "image": complete - implant,
        "implant": implant,
        "complete": complete,
        "spacing": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
    }


def test_validation_scores_the_implant_not_the_copied_input():
    from fam_skull.train.validation import validate

    case = _val_case()
    perfect = validate(_Oracle(case["implant"]), [case], "cpu")
    assert perfect == {"val_implant_dsc": 1.0, "val_implant_hd95": 0.0, "val_skull_dsc": 1.0}
    copier = validate(_Oracle(case["image"]), [case], "cpu")  # the network that copies its input
    known, total = case["image"].sum(), case["complete"].sum()
    assert copier["val_implant_dsc"] == 0.0
    assert copier["val_implant_hd95"] == pytest.approx(np.linalg.norm([12 * 1.0, 10 * 2.0, 8 * 3.0]))  # the miss policy
    assert copier["val_skull_dsc"] == pytest.approx(float(2 * known / (known + total)))


def test_best_checkpoint_is_the_epoch_with_the_best_implant_dsc(tmp_path, manifest, monkeypatch):
    import fam_skull.train.validation
    from fam_skull.train import train

    # implant DSC peaks at epoch 2 while the completed-skull DSC peaks at epoch 3
    scripted = iter([(0.2, 0.95), (0.6, 0.90), (0.4, 0.99)])

    def fake_validate(model, ds, device):
        implant, skull = next(scripted)
        return {"val_implant_dsc": implant, "val_implant_hd95": 5.0, "val_skull_dsc": skull}

    monkeypatch.setattr(fam_skull.train.validation, "validate", fake_validate)
    path, _ = config_file(tmp_path, manifest, "baseline", train={"epochs": 3})
    result = train(path, quiet=True)
    run = tmp_path / "run_baseline_unet"
    best, last = load_checkpoint(run / "checkpoints" / "best.pt"), load_checkpoint(run / "checkpoints" / "last.pt")
    assert (result.best_epoch, result.best_implant_dsc, best["epoch"], last["epoch"]) == (2, 0.6, 2, 3)
    header, *rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[header.split(",").index("val_implant_dsc")] for r in rows] == ["0.2", "0.6", "0.4"]


def test_resume_refuses_a_checkpoint_of_another_format(tmp_path, manifest, capsys):
    from fam_skull.common.checkpoint import save_checkpoint

    path, _ = config_file(tmp_path, manifest, "baseline", train={"epochs": 1})
    assert main(["train", str(path), "--quiet"]) == 0
    run = tmp_path / "run_baseline_unet"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    save_checkpoint({**state, "format": "fam-skull-checkpoint/1"}, run / "checkpoints" / "last.pt")
    assert main(["train", "train.epochs=2", "--resume", str(run), "--quiet"]) == 1
    assert "checkpoint format 'fam-skull-checkpoint/1'" in capsys.readouterr().err
