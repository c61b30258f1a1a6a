"""The parameters of ``fam-skull predict`` and ``evaluate``, apart from the stages: the command line reads their
defaults without importing torch or MONAI (so ``--help`` answers at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_prep.preprocess import BONE_HU
from fam_skull.metrics import EMPTY_POLICIES


@dataclass
class PredictOptions:
    """Parameters of ``fam-skull predict`` (the CLI flags have the same names).

    Attributes:
        run: a training run folder.
        output: folder for the predictions.
        manifest: a prepared manifest; its ``roles`` cases are predicted.
        files: defective skull volumes to predict instead (any format SimpleITK reads).
        roles: manifest roles to predict (default both evaluation sets).
        checkpoint: ``best``, ``last``, ``epoch_NNNN`` or a .pt path.
        min_component_mm3: implant components smaller than this are removed.
        stl: also write ``<id>_implant.stl``.
        roi_size: sliding-window size on the grid (None: the whole grid at once).
        stage: ``coarse`` or ``refined`` (a refinement run only); default: the run's own stage.
        input_kind, threshold: how ``files`` are binarized (as in ``prepare``).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
    """

    run: Path
    output: Path
    manifest: Path | None = None
    files: list[Path] = field(default_factory=list)
    roles: tuple[str, ...] = ("eval1", "eval2")
    checkpoint: str = "best"
    min_component_mm3: float = 100.0
    stl: bool = False
    roi_size: tuple[int, int, int] | None = None
    stage: str | None = None
    input_kind: str = "auto"
    threshold: float = BONE_HU
    device: str = "auto"
    force: bool = False
    quiet: bool = False


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
        workers: parallel processes.
    """

    predictions: list[str]
    manifest: Path
    output: Path
    sets: tuple[str, ...] = ("eval1", "eval2")
    subset: int = 100
    empty: str = "diagonal"
    workers: int = 1
    force: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.subset < 1:
            raise ValueError(f"subset: must be >= 1 (the first N case ids), got {self.subset}")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.empty not in EMPTY_POLICIES:
            raise ValueError(f"empty: one of {', '.join(EMPTY_POLICIES)}, got {self.empty!r}")
