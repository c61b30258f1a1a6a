"""Shared helpers: synthetic skulls written as NRRD/NIfTI in the test's own folder."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from data_prep.phantom import synthetic_skull
from data_prep.prepare import PrepareOptions, prepare

TINY_UNET = {"name": "unet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    """Write an (x, y, z) array with geometry, as the datasets ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="session")
def skulls():
    """Four synthetic skulls at 48x48x24 with their spacing."""
    return [synthetic_skull(seed, (48, 48, 24))[:2] for seed in range(4)]


@pytest.fixture(scope="session")
def manifest(tmp_path_factory):
    """Six synthetic skulls at 32x32x16 (their original space 48x48x24): 4 train, 1 val, 1 evaluation skull."""
    out = tmp_path_factory.mktemp("data")
    prepare(
        PrepareOptions(
            out,
            synthetic=6,
            synthetic_shape=(48, 48, 24),
            grid=(32, 32, 16),
            defects=("sphere", "bilateral"),
            shift_defects=("random",),
            val_fraction=0.2,
            eval_fraction=0.2,
            quiet=True,
        )
    )
    return out / "manifest.json"


def write_config(folder: Path, manifest: Path, method: str, model: dict, name: str, **extra):
    """A tiny training config file; returns (path, run folder)."""
    cfg = {
        "method": method,
        "output": str(folder / name),
        "data": {"manifest": str(manifest), "batch_size": 2},
        "model": model,
        "optim": {"lr": 1e-3},
        "fam": {"lam": 0.01},
        "train": {"epochs": 2, "save_epochs": [1], "threads": 1},
    }
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg["output"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, manifest):
    """A 2-epoch baseline U-Net run on the tiny dataset."""
    from fam_skull.train import train

    folder = tmp_path_factory.mktemp("runs")
    path, out = write_config(folder, manifest, "baseline", TINY_UNET, "tiny")
    train(path, quiet=True)
    return Path(out)
