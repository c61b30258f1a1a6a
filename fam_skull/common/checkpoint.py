"""Checkpoints: dicts of plain tensors and numbers, written atomically, read without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from data_prep.io import atomic_path

CHECKPOINT_FORMAT = "fam-skull-checkpoint/2"  # /2: best.pt selected by implant DSC (/1: by skull DSC)
READABLE_FORMATS = ("fam-skull-checkpoint/1", CHECKPOINT_FORMAT)  # what predict and export can load


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically and flushed to disk: a kill or a full disk leaves the old file.

    Raises:
        CheckpointError: it cannot be written (full disk, no permission); the message names the file.
    """
    try:
        with atomic_path(path, ".pt") as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        reason = e.strerror if isinstance(e, OSError) else e
        raise CheckpointError(f"{path}: cannot be written ({reason}); free space or fix permissions, then continue with --resume") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code from untrusted files).

    Raises:
        CheckpointError: missing, truncated, or not a fam-skull checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot be read safely ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a fam-skull checkpoint (no 'model' entry)")
    return state
