"""Helpers the tests share: synthetic volumes written as the datasets ship them, a tiny U-Net, a tiny config, and
the checks of a refused command."""

import json
import locale
import re
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


def cut(path: Path, fraction: float = 0.4) -> Path:
    """Truncate a file to ``fraction`` of its bytes (a download or copy that stopped)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def manifest_variant(tmp_path: Path, manifest: Path, change) -> Path:
    """A copy of a prepared manifest (its volumes linked, not copied) changed by ``change(data)``."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for sub in ("grid", "original"):
        if not (folder / sub).exists():
            (folder / sub).symlink_to(manifest.parent / sub)
    data = json.loads(manifest.read_text())
    data = change(data) or data
    path = folder / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def assert_refused(argv: list[str], status: int, pattern: str, tmp_path: Path, capsys) -> None:
    """The command line refuses ``argv``: exit ``status``, a message matching ``pattern``, no traceback, nothing
    written into ``tmp_path/out`` (but its lock) and no file escaped the test's folder."""
    from data_prep.folder import LOCK_NAME
    from fam_skull.cli import main

    try:
        code = main([*argv, "--quiet"])
    except SystemExit as e:  # argparse: usage and the message on stderr
        code = e.code
    err = capsys.readouterr().err
    assert code == status, err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    out = tmp_path / "out"
    assert not out.exists() or not any(p for p in out.rglob("*") if p.name != LOCK_NAME and p.is_file())
    assert not list(tmp_path.parent.rglob("ESCAPED*"))


def refusal_test(table: dict):
    """The test of a stage's bad-input table (name -> (argv built from the ``folders`` fixture, exit status, message
    pattern)): every row is refused as :func:`assert_refused` checks, and the file standing where a folder belongs
    is left as it was."""
    import pytest

    @pytest.mark.parametrize("name", list(table))
    def test_bad_arguments_are_refused_before_any_work(name, folders, capsys):
        argv, status, pattern = table[name]
        assert_refused(argv(folders), status, pattern, folders["tmp"], capsys)
        assert folders["file"].read_text() == "not a folder"

    return test_bad_arguments_are_refused_before_any_work


def write_series(
    image: sitk.Image,
    folder: Path,
    uid: str = "1.2.826.0.1.3680043.2.1125.7",
    description: str = "CT head",
    prefix: str = "s",
    skip=(),
    duplicate: int | None = None,
    tilt_mm: float = 0.0,
    jitter: dict | None = None,
    keep=None,
) -> Path:
    """Write a 3D image as a CT DICOM series, one file per axial slice, as a scanner exports it; damaged on request:
    slices left out (``skip``, or all but ``keep``), one written twice, each shifted ``tilt_mm`` further along the
    rows (gantry tilt), or moved along the normal by ``jitter[k]`` mm."""
    folder.mkdir(parents=True, exist_ok=True)
    d = np.array(image.GetDirection()).reshape(3, 3)
    normal = d[:, 2]
    orientation = "\\".join(f"{v:.8f}" for v in [*d[:, 0], *d[:, 1]])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    ctype = locale.setlocale(locale.LC_CTYPE)  # GDCM's writer sets LC_CTYPE to "C": Python's text files turn ASCII
    for k in range(image.GetSize()[2]):
        if k in skip or (keep is not None and k not in keep):
            continue
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k))) + k * tilt_mm * d[:, 0] + (jitter or {}).get(k, 0.0) * normal
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.99",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0028|1052": "0",
            "0028|1053": "1",
        }
        piece = image[:, :, k]
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        for copy in range(2 if k == duplicate else 1):
            writer.SetFileName(str(folder / f"{prefix}{k:04d}{'_copy' if copy else ''}.dcm"))
            writer.Execute(piece)
    locale.setlocale(locale.LC_CTYPE, ctype)
    return folder
