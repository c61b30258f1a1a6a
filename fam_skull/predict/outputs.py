"""What ``predict`` writes per case, in the case's original geometry: the completed skull and the implant as NIfTI
and optionally the implant's surface as an STL mesh (names from :class:`~fam_skull.common.paths.PredictionFolder`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.io import from_array, write_image
from data_prep.preprocess import Layout
from fam_skull.common.paths import PredictionFolder
from fam_skull.predict.mesh import write_stl


def write_case(
    output: Path,
    case_id: str,
    defective: np.ndarray,
    implant: np.ndarray,
    layout: Layout,
    stl: bool = False,
    disagreement: np.ndarray | None = None,
) -> dict:
    """Write the completed skull and the implant (and the implant's STL when there is one, and the test-time flips'
    disagreement in percent when given); returns their names."""
    files = PredictionFolder.case_files(case_id, stl and bool(implant.any()), disagreement is not None)
    write_image(from_array((defective | implant).astype(np.uint8), layout.original), output / files["complete"])
    implant_image = from_array(implant.astype(np.uint8), layout.original)
    write_image(implant_image, output / files["implant"])
    if "stl" in files:
        write_stl(implant, implant_image, output / files["stl"])
    if disagreement is not None:
        write_image(from_array(disagreement.astype(np.uint8), layout.original), output / files["disagreement"])
    return files
