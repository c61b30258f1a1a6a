"""Session fixtures: synthetic skulls, a tiny prepared dataset and a 2-epoch run (helpers live in helpers.py)."""

from pathlib import Path

import pytest
from helpers import TINY_UNET, write_config

from data_prep.phantom import synthetic_skull
from data_prep.prepare import PrepareOptions, prepare


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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, manifest):
    """A 2-epoch baseline U-Net run on the tiny dataset."""
    from fam_skull.train import train

    folder = tmp_path_factory.mktemp("runs")
    path, out = write_config(folder, manifest, "baseline", TINY_UNET, "tiny")
    train(path, quiet=True)
    return Path(out)


@pytest.fixture(scope="session")
def predictions(tmp_path_factory, manifest, trained_run):
    """The 2-epoch run's predictions of the tiny dataset's evaluation sets (its scattered pieces kept, floating or
    not, so that every case has an implant to score)."""
    from fam_skull.cli import main

    out = tmp_path_factory.mktemp("pred")
    argv = ["predict", "--run", str(trained_run), "--manifest", str(manifest), "--output", str(out), "--keep-floating", "--quiet"]
    assert main(argv) == 0
    return out


@pytest.fixture
def folders(tmp_path, manifest, trained_run, predictions):
    """What the bad-input tables build their command lines from: a file where a folder belongs, a broken
    predictions index, a tiny training config, the shared run, manifest and predictions."""
    from helpers import TINY_UNET, write_config

    (tmp_path / "a_file.txt").write_text("not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "predictions.json").write_text('{"method": "x", "cases": ')
    config, _ = write_config(tmp_path, manifest, "baseline", TINY_UNET, "cfg")
    return {
        "tmp": tmp_path,
        "out": tmp_path / "out",
        "file": tmp_path / "a_file.txt",
        "run": trained_run,
        "manifest": manifest,
        "predictions": predictions,
        "broken": broken,
        "config": config,
    }
