"""The divergence guard: a run stops, naming its last good checkpoint, before a diverged model is saved."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fam_skull.common.paths import RunFolder
from fam_skull.train.step import StepResult

log = logging.getLogger("fam_skull.train")


class TrainingError(RuntimeError):
    """Training stopped (too many non-finite steps in a row, or diverged weights); the last good checkpoint is kept."""


def largest_weight(model: torch.nn.Module) -> float:
    """The largest absolute weight (inf or nan when any is not finite)."""
    return float(torch.stack([p.detach().abs().max() for p in model.parameters()]).max())


class DivergenceGuard:
    """Counts non-finite steps in a row (``max_nonfinite`` of them stop the run) and checks the weights after
    every step: a finite loss does not mean sane weights (a huge learning rate drives them to ~1e30 while the
    Dice loss stays finite)."""

    def __init__(self, run: Path, max_nonfinite: int, max_weight: float) -> None:
        self.run, self.max_nonfinite, self.max_weight = run, max_nonfinite, max_weight
        self.nonfinite = 0

    def _last_good(self) -> str:
        last = RunFolder(self.run).checkpoint("last")
        if last.is_file():
            return f"the last good checkpoint is {last} (continue from it with --resume {self.run} and a lower value)"
        return "no checkpoint was written (it diverged in the first epoch)"

    def check(self, result: StepResult, model: torch.nn.Module, epoch: int, step: int) -> None:
        """After one step.

        Raises:
            TrainingError: the run diverged.
        """
        if result.skipped:
            self.nonfinite += 1
            log.warning(
                "epoch %d step %d: non-finite loss %s / regularizer %s or gradient, step skipped",
                epoch,
                step,
                result.task_loss,
                result.regularizer,
            )
            if self.nonfinite >= self.max_nonfinite:
                raise TrainingError(
                    f"{self.nonfinite} non-finite steps in a row (epoch {epoch}); lower optim.lr or fam.lam; {self._last_good()}"
                )
            return
        self.nonfinite = 0
        largest = largest_weight(model)
        if not largest <= self.max_weight:
            raise TrainingError(
                f"epoch {epoch} step {step}: a weight reached {largest:.3g} (train.max_weight {self.max_weight:g}), "
                f"training diverged; lower optim.lr or fam.lam; {self._last_good()}"
            )
