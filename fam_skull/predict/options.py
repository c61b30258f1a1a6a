"""The parameters of ``fam-skull predict``, apart from the stage: the command line reads their defaults without
importing torch or MONAI (so ``--help`` answers at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from data_prep.preprocess import BONE_HU

# implant pieces smaller than this are resampling slivers along the rim (predict, export, sweep, the bundle)
MIN_COMPONENT_MM3 = 100.0
# implant pieces farther than this from the defective skull fill no gap: they float in the cavity or outside the head
RIM_MM = 3.0
# small implant pieces (under a tenth of the largest) farther than this from every large one are stray bone on
# intact bone: measured at 1 mm, fragments of a facial implant lie 2-27 mm from its main piece, the pieces added
# on the MNI152 skull 60-124 mm from its implant (docs/prediction.md)
STRAY_MM = 40.0
# a skull whose size differs from the training skulls' by more than this fraction is scaled to theirs
SIZE_TOLERANCE = 0.05
Frame = Literal["LPS", "RAS"]  # the patient frame of a mesh's millimetres (fam_skull.predict.mesh)
SMOOTHING_ITERATIONS = 10  # Taubin passes (lambda 0.5, mu -0.53) of a mesh: removes the voxel steps, keeps the volume


@dataclass
class PredictOptions:
    """Parameters of ``fam-skull predict`` (the CLI flags have the same names).

    Attributes:
        run: a training run folder.
        output: folder for the predictions.
        manifest: a prepared manifest; its ``roles`` cases are predicted.
        files: defective skull volumes to predict instead (any format SimpleITK reads; a folder stands for the
            volumes in it).
        roles: manifest roles to predict (default both evaluation sets).
        checkpoint: ``best``, ``last``, ``epoch_NNNN`` or a .pt path.
        min_component_mm3: implant components smaller than this are removed.
        rim_mm: implant components that neither touch the defective skull nor come within this distance of it are
            removed (None: kept).
        stray_mm: implant pieces under a tenth of the largest piece's volume, farther than this from every
            larger piece, are removed (None: kept; :func:`fam_skull.networks.implant.drop_strays`).
        flips: test-time flips: the implant is where the mean probability of the scan and of its left-right mirror
            image (mirrored back) exceeds 0.5, and ``<id>_flip_disagreement.nii.gz`` holds their difference (%).
        size_tolerance: a skull whose width-and-length differs from the training skulls' by more than this
            fraction is predicted scaled to their size (:mod:`fam_skull.predict.size`; None: never).
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
    min_component_mm3: float = MIN_COMPONENT_MM3
    rim_mm: float | None = RIM_MM
    stray_mm: float | None = STRAY_MM
    flips: bool = False
    size_tolerance: float | None = SIZE_TOLERANCE
    stl: bool = False
    roi_size: tuple[int, int, int] | None = None
    stage: str | None = None
    input_kind: str = "auto"
    threshold: float = BONE_HU
    device: str = "auto"
    force: bool = False
    quiet: bool = False
