"""``fam-skull train``: the trainer (:mod:`.trainer`) holds the epoch loop; what it assembles (:mod:`.parts`), its
data (:mod:`.data`, :mod:`.augment`, :mod:`.refine_data`), step (:mod:`.step`), validation, logs (:mod:`.runlog`),
divergence guard (:mod:`.guard`) and checkpoint state (:mod:`.state`) are units of their own.

``fam_skull.train.train`` is imported on first use, so the command line's ``--help`` does not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fam_skull.train.guard import TrainingError
    from fam_skull.train.trainer import Trainer, TrainResult, train

__all__ = ["TrainResult", "Trainer", "TrainingError", "train"]


def __getattr__(name: str):
    if name == "TrainingError":
        from fam_skull.train import guard

        return guard.TrainingError
    if name in __all__:
        from fam_skull.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'fam_skull.train' has no attribute {name!r}")
