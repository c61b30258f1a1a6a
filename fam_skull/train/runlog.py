"""A run's logs on rank 0: ``config.yaml``, ``log.txt``, TensorBoard (``tb/``), ``metrics.csv`` and ``curves.png``.
The regularizer's column is named for the objective it holds (kappa, kappa_F, ...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from data_prep.io import atomic_write_text
from fam_skull.common.paths import RunFolder
from fam_skull.config import Config
from fam_skull.fam.regularizer import OBJECTIVE_COLUMNS
from fam_skull.train.curves import plot_curves, write_metrics
from fam_skull.train.step import StepResult

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("fam_skull.train")
EPOCH_SCALARS = ("val_implant_dsc", "val_implant_hd95", "val_skull_dsc", "step_time", "data_wait_share")


def regularizer_column(config: Config) -> str | None:
    """The metrics.csv column of the run's regularizer value, None without FAM."""
    return OBJECTIVE_COLUMNS[config.fam.objective] if config.method == "fam" else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class RunLog:
    """Open with :meth:`open` (rank 0 only), feed steps and epochs, :meth:`close` at the end."""

    def __init__(self, folder: RunFolder, config: Config) -> None:
        self.folder, self.config = folder, config
        self.column = regularizer_column(config)
        self._handler: logging.FileHandler | None = None
        self._writer: SummaryWriter | None = None

    def open(self, first_step: int, summary: str) -> None:
        """Write the resolved config, attach the log file and TensorBoard (events after ``first_step`` of an
        interrupted run are dropped, so a resumed run's curves have no doubled stretch)."""
        from torch.utils.tensorboard import SummaryWriter

        self.folder.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder.config, self.config.to_yaml())
        self._handler = logging.FileHandler(self.folder.log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self._handler)
        self._writer = SummaryWriter(str(self.folder.tensorboard), purge_step=first_step or None)
        log.info(summary)

    def step(self, result: StepResult, step: int) -> None:
        if self._writer is None:
            return
        self._writer.add_scalar("train/loss", result.loss, step)
        self._writer.add_scalar("train/task_loss", result.task_loss, step)
        if result.regularizer is not None:
            self._writer.add_scalar(f"train/{self.column}", result.regularizer, step)

    def epoch(self, row: dict, history: list[dict], best_epoch: int) -> None:
        """metrics.csv, curves.png, TensorBoard and the log line of a finished epoch."""
        write_metrics(history, self.folder.metrics)
        plot_curves(history, self.folder.curves, best_epoch, self.column)
        assert self._writer is not None  # open() ran on rank 0
        for key in ((self.column,) if self.column else ()) + EPOCH_SCALARS:
            if row.get(key) is not None:
                self._writer.add_scalar(f"epoch/{key}", row[key], row["epoch"])
        self._writer.flush()
        if row["rank_spread"]:
            log.error("epoch %d: replicas differ across ranks by %.3g", row["epoch"], row["rank_spread"])
        log.info(
            "epoch %d: loss %s, task %s, %s %s, val implant DSC %s HD95 %s mm, %.3f s/step, data wait %.1f%%%s",
            row["epoch"],
            _fmt(row["loss"], ".4f"),
            _fmt(row["task_loss"], ".4f"),
            self.column or "regularizer",
            _fmt(row.get(self.column) if self.column else None, ".4g"),
            _fmt(row["val_implant_dsc"], ".4f"),
            _fmt(row["val_implant_hd95"], ".2f"),
            row["step_time"],
            100 * row["data_wait_share"],
            f", {row['skipped_steps']} skipped" if row["skipped_steps"] else "",
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
