"""The folders fam-skull writes, named in one place: a training run's files, a predictions folder's index and
per-case files, and the folder name a method label gets in reports. Stages ask here instead of spelling paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data_prep.io import read_json


@dataclass(frozen=True)
class RunFolder:
    """The files of a training run folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def checkpoint(self, name: str) -> Path:
        """``best``, ``last``, ``epoch_NNNN`` (in ``checkpoints/``) or a path ending in .pt."""
        return Path(name) if name.endswith(".pt") else self.path / "checkpoints" / f"{name}.pt"


@dataclass(frozen=True)
class PredictionFolder:
    """A folder written by ``fam-skull predict``: ``<id>_complete.nii.gz``, ``<id>_implant.nii.gz`` (and
    ``<id>_implant.stl``, ``<id>_flip_disagreement.nii.gz``) per case, listed in ``predictions.json``."""

    path: Path

    @property
    def index(self) -> Path:
        return self.path / "predictions.json"

    @staticmethod
    def case_files(case_id: str, stl: bool = False, disagreement: bool = False) -> dict[str, str]:
        """The file names of one case's predictions, by kind."""
        files = {"complete": f"{case_id}_complete.nii.gz", "implant": f"{case_id}_implant.nii.gz"}
        files |= {"stl": f"{case_id}_implant.stl"} if stl else {}
        return files | ({"disagreement": f"{case_id}_flip_disagreement.nii.gz"} if disagreement else {})

    def read_index(self) -> dict:
        """The folder's index.

        Raises:
            FileNotFoundError, ValueError: missing, unreadable, or not an index written by ``fam-skull predict``.
        """
        if not self.index.is_file():
            raise FileNotFoundError(f"{self.path}: no {self.index.name}; run 'fam-skull predict' into this folder first")
        index = read_json(self.index)
        if not isinstance(index, dict) or not isinstance(index.get("cases"), dict) or not isinstance(index.get("method"), str):
            raise ValueError(
                f"{self.index}: not an index written by 'fam-skull predict' (no 'method' and 'cases'); predict again with --force"
            )
        return index


def slug(label: str) -> str:
    """A method label as a folder or file name (``FAM, lambda = 3`` -> ``FAM_lambda_3``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_") or "method"
