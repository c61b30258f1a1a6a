"""Helpers the tests share: synthetic volumes written as the datasets ship them, a tiny U-Net, a tiny config."""

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

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
