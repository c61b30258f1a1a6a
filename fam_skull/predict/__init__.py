"""``fam-skull predict`` (:mod:`.predictor`: the run's networks and the per-case loop; :mod:`.inputs`, :mod:`.outputs`:
what it reads and writes) and ``fam-skull export`` (:mod:`.export`: the same as a MONAI bundle).

``fam_skull.predict.predict`` is imported on first use, so the command line's ``--help`` does not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fam_skull.predict.options import PredictOptions

if TYPE_CHECKING:
    from fam_skull.predict.predictor import PredictResult, predict

__all__ = ["PredictOptions", "PredictResult", "predict"]


def __getattr__(name: str):
    if name in ("PredictResult", "predict"):
        from fam_skull.predict import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'fam_skull.predict' has no attribute {name!r}")
