"""``fam-skull evaluate`` (:mod:`.evaluation`: per-case scores, cached, and their aggregates; :mod:`.report`: the
paper's table, box plots and overlays).

``fam_skull.evaluate.evaluate`` is imported on first use, so the command line's ``--help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fam_skull.evaluate.options import EvaluateOptions

if TYPE_CHECKING:
    from fam_skull.evaluate.evaluation import EvaluateResult, evaluate

__all__ = ["EvaluateOptions", "EvaluateResult", "evaluate"]


def __getattr__(name: str):
    if name in ("EvaluateResult", "evaluate"):
        from fam_skull.evaluate import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'fam_skull.evaluate' has no attribute {name!r}")
