"""Checkpoints are written atomically and never unpickle arbitrary objects."""

import collections
import os
import shutil

import pytest
import torch

from fam_skull.cli import main
from fam_skull.common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class Payload:
    """Stands for code a crafted checkpoint would run when unpickled."""


def test_round_trip_and_atomic_replace(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill while writing

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_untrusted_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": collections.OrderedDict(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(path)
    torch.save({"weights": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="not a fam-skull checkpoint"):
        load_checkpoint(path)


def test_resume_from_a_corrupt_checkpoint_is_reported(tmp_path, trained_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: os.path.getsize(last) // 3])
    assert main(["train", "train.epochs=3", "--resume", str(run), "--quiet"]) == 1
    assert "last.pt: cannot be read safely" in capsys.readouterr().err


def test_a_full_disk_while_saving_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        CheckpointError, match=r"last\.pt: cannot be written \(No space left on device; the previous version is unchanged\); free space"
    ):
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
