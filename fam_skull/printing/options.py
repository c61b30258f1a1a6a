"""The parameters of ``fam-skull implant``: the command line reads their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_prep.preprocess import BONE_HU
from fam_skull.predict.options import MIN_COMPONENT_MM3, SMOOTHING_ITERATIONS, Frame


@dataclass
class ImplantOptions:
    """Parameters of ``fam-skull implant`` (the CLI flags have the same names)."""

    scan: Path
    run: Path
    output: Path
    series: str | None = None  # the SeriesInstanceUID, when the DICOM folder holds several
    input_kind: str = "auto"  # auto (negative values: CT) | ct | mask
    threshold: float = BONE_HU
    checkpoint: str = "best"
    stage: str | None = None
    device: str = "auto"
    frame: Frame = "LPS"
    smoothing: int = SMOOTHING_ITERATIONS
    faces: int | None = None  # decimate the implant mesh to about this many triangles
    min_component_mm3: float = MIN_COMPONENT_MM3
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.input_kind not in ("auto", "ct", "mask"):
            raise ValueError(f"input_kind: auto, ct or mask, got {self.input_kind!r}")
        if self.frame not in ("LPS", "RAS"):
            raise ValueError(f"frame: LPS or RAS, got {self.frame!r}")
        if self.faces is not None and self.faces < 100:
            raise ValueError(f"faces: at least 100 triangles, got {self.faces}")
        if self.smoothing < 0:
            raise ValueError(f"smoothing: >= 0 passes, got {self.smoothing}")
