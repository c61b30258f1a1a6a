"""``fam-skull train``: baseline, FAM or SAM training of a 3D network on a prepared manifest.

A run folder holds ``config.yaml`` (resolved), ``log.txt``, ``metrics.csv``, ``tb/`` (TensorBoard),
``curves.png`` and ``checkpoints/{last,best,epoch_NNNN}.pt``. ``last.pt`` is written atomically after every
epoch, so a kill loses at most the epoch in progress, and ``resume`` continues exactly where it stopped.
Under ``torchrun`` every process trains a DistributedDataParallel replica on its share of each global batch;
rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from data_prep.folder import claim
from data_prep.progress import progress
from fam_skull.common.checkpoint import save_checkpoint
from fam_skull.common.paths import RunFolder
from fam_skull.config import Config, validate
from fam_skull.train import parts, validation
from fam_skull.train.augment import EpochSeededDataset
from fam_skull.train.distributed import init_distributed, rank_spread
from fam_skull.train.guard import DivergenceGuard
from fam_skull.train.resume import resolve
from fam_skull.train.runlog import RunLog
from fam_skull.train.state import Progress, restore, training_state


@dataclass
class TrainResult:
    run: Path
    epochs: int
    best_implant_dsc: float
    best_epoch: int


class Trainer:
    """One training run. The constructor does everything that can fail on bad input (config, manifest, model,
    FAM layer, batch split, checkpoint to resume), so errors come before any training; :meth:`run` trains."""

    def __init__(self, cfg: Config, run: Path, *, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, self.folder, self.quiet = validate(cfg), RunFolder(run), quiet
        manifest = parts.checked_manifest(cfg, run, resume)  # before a process group exists
        self.device = parts.device_for(cfg, int(os.environ.get("LOCAL_RANK", "0")))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        self.grid = tuple(manifest.data["grid"])
        model = parts.network(cfg, self.grid, self.device)
        self.rank, self.world, _, self._owns_group = init_distributed()
        try:
            self.parts = parts.assemble(cfg, manifest, model, self.device, self.rank, self.world, quiet)
            self.progress = restore(self.folder.checkpoint("last"), cfg, self.parts) if resume else Progress()
        except BaseException:
            if self._owns_group:  # a failed start leaves no process group behind
                dist.destroy_process_group()
            raise
        self.resumed = resume
        self.guard = DivergenceGuard(run, cfg.train.max_nonfinite, cfg.train.max_weight)
        self.log = RunLog(self.folder, cfg)

    def _train_epoch(self, epoch: int) -> dict:
        p = self.parts
        sampler = p.train_loader.sampler
        assert isinstance(sampler, DistributedSampler)  # loader() builds one
        sampler.set_epoch(epoch)
        if isinstance(p.train_ds, EpochSeededDataset):
            p.train_ds.set_epoch(epoch)
        losses, task_losses, values = [], [], []
        steps = skipped = 0
        wait = busy = 0.0
        bar = progress(
            total=len(p.train_loader), desc=f"epoch {epoch}/{self.cfg.train.epochs}", quiet=self.quiet or self.rank != 0, leave=False
        )
        t0 = time.perf_counter()
        for batch in p.train_loader:
            t1 = time.perf_counter()
            result = p.stepper(batch["image"].to(self.device), batch[self.cfg.model.target].to(self.device))
            t2 = time.perf_counter()
            wait, busy, t0 = wait + t1 - t0, busy + t2 - t1, t2
            steps += 1
            self.guard.check(result, p.model, epoch, steps)
            if result.skipped:
                skipped += 1
                continue
            losses.append(result.loss)
            task_losses.append(result.task_loss)
            if result.regularizer is not None:
                values.append(result.regularizer)
            self.log.step(result, (epoch - 1) * len(p.train_loader) + steps - 1)
            bar.set_postfix(
                loss=f"{result.task_loss:.4f}", **({self.log.column: f"{values[-1]:.3g}"} if values and self.log.column else {})
            )
            bar.update()
        bar.close()
        lr = p.optimizer.param_groups[0]["lr"]
        p.scheduler.step()
        row = {"epoch": epoch, "lr": lr, "loss": float(np.mean(losses)) if losses else None}
        row["task_loss"] = float(np.mean(task_losses)) if task_losses else None
        if self.log.column:
            row[self.log.column] = float(np.mean(values)) if values else None
        return row | {
            "val_implant_dsc": None,
            "val_implant_hd95": None,
            "val_skull_dsc": None,
            "step_time": busy / max(steps, 1),
            "data_wait_share": wait / max(wait + busy, 1e-12),
            "skipped_steps": skipped,
            "rank_spread": rank_spread(p.model, self.world),
        }

    def _validate(self) -> dict:
        p, r = self.parts, self.cfg.refine
        assert p.val_ds is not None  # rank 0 with val cases
        if self.cfg.stage == "refine":
            return validation.validate_refined(p.model, p.val_ds, r.patch, r.margin_mm, self.device)
        return validation.validate(p.model, p.val_ds, self.device)

    def _end_epoch(self, epoch: int, row: dict) -> None:
        """Rank 0: validate, checkpoint (last, best, listed epochs), then the logs."""
        cfg, prog = self.cfg, self.progress
        is_best = False
        if self.parts.val_ds is not None and (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs):
            row.update(self._validate())
            if row["val_implant_dsc"] > prog.best:
                prog.best, prog.best_epoch, is_best = row["val_implant_dsc"], epoch, True
        prog.history.append(row)
        state = training_state(cfg, self.parts, self.grid, epoch, prog)
        save_checkpoint(state, self.folder.checkpoint("last"))
        if is_best:
            save_checkpoint(state, self.folder.checkpoint("best"))
        if epoch in cfg.train.save_epochs:
            save_checkpoint(state, self.folder.checkpoint(f"epoch_{epoch:04d}"))
        self.log.epoch(row, prog.history, prog.best_epoch)

    def run(self) -> TrainResult:
        """Train from the first unfinished epoch to ``train.epochs``.

        Raises:
            FolderError: another process trains into this run folder.
            TrainingError: the run diverged (the last good checkpoint is kept).
        """
        with claim(self.folder.path, "train") if self.rank == 0 else nullcontext():
            try:
                if self.rank == 0:
                    self.log.open((self.progress.start_epoch - 1) * len(self.parts.train_loader), self._summary())
                for epoch in range(self.progress.start_epoch, self.cfg.train.epochs + 1):
                    row = self._train_epoch(epoch)
                    if self.rank == 0:
                        self._end_epoch(epoch, row)
                    if self.world > 1:
                        dist.barrier()
            finally:
                self._close()
        return TrainResult(self.folder.path, self.cfg.train.epochs, self.progress.best, self.progress.best_epoch)

    def _summary(self) -> str:
        p = self.parts
        return (
            f"{'resuming' if self.resumed else 'starting'} {self.folder.path}: {len(p.train_ds)} train / {len(p.val_ds or [])} val "
            f"cases, grid {self.grid}, {self.device}, {self.world} process(es), epochs {self.progress.start_epoch}-{self.cfg.train.epochs}"
        )

    def _close(self) -> None:
        self.log.close()
        if self._owns_group:
            # free the DDP reducer before the process group: the other order can hang gloo's teardown at exit
            del self.parts
            gc.collect()
            dist.destroy_process_group()


def train(
    config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, resume: str | Path | None = None, quiet: bool = False
) -> TrainResult:
    """Train from a config (object or YAML path, with ``key=value`` overrides), or resume a run folder.

    Raises:
        ConfigError: before any work, for a bad key, value, manifest, model or FAM layer.
        CheckpointError: the checkpoint to resume cannot be read.
        TrainingError: the run diverged (``train.max_nonfinite`` non-finite steps in a row, or a weight beyond
            ``train.max_weight``).
    """
    cfg, run = resolve(config, overrides, resume)
    return Trainer(cfg, run, resume=resume is not None, quiet=quiet).run()
