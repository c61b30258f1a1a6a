"""The parameters of ``fam-skull evaluate``, apart from the stage: the command line reads their defaults without
importing torch or MONAI (so ``--help`` answers at once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fam_skull.metrics import EMPTY_POLICIES

UNITS = ("mm", "voxels")


@dataclass
class EvaluateOptions:
    """Parameters of ``fam-skull evaluate`` (the CLI flags have the same names).

    Attributes:
        predictions: folders written by ``fam-skull predict``; ``label=folder`` names a method, otherwise
            the label comes from the run (baseline / FAM, lambda = ... / SAM, rho = ...).
        manifest: the prepared manifest holding the ground truth.
        output: report folder.
        sets: evaluation sets (manifest roles).
        subset: size of the subset aggregates (the first N case ids in sorted order, or all when fewer).
        empty: empty-mask policy of :func:`fam_skull.metrics.compute_metrics`.
        units: ``mm`` (the scans' spacing) or ``voxels`` (distances counted in voxels of each case's grid, as
            medpy gives them without a spacing; the boundary DSC's band is then 10 voxels).
        workers: parallel processes.
    """

    predictions: list[str]
    manifest: Path
    output: Path
    sets: tuple[str, ...] = ("eval1", "eval2")
    subset: int = 100
    empty: str = "diagonal"
    units: str = "mm"
    workers: int = 1
    force: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.subset < 1:
            raise ValueError(f"subset: must be >= 1 (the first N case ids), got {self.subset}")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.units not in UNITS:
            raise ValueError(f"units: one of {', '.join(UNITS)}, got {self.units!r}")
        if self.empty not in EMPTY_POLICIES:
            raise ValueError(f"empty: one of {', '.join(EMPTY_POLICIES)}, got {self.empty!r}")
