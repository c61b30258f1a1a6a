"""``fam-skull train``: baseline, FAM or SAM training of a 3D network on a prepared manifest.

A run folder holds ``config.yaml`` (resolved), ``log.txt``, ``metrics.csv``, ``tb/`` (TensorBoard),
``curves.png`` and ``checkpoints/{last,best,epoch_NNNN}.pt``. ``last.pt`` is written atomically after every
epoch, so a kill loses at most the epoch in progress, and ``resume`` continues exactly where it stopped.
Under ``torchrun`` every process trains a DistributedDataParallel replica on its share of each global batch;
rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from data_prep.defects import DEFECT_TYPES
from data_prep.folder import check_folder, claim
from data_prep.io import atomic_write_text
from data_prep.manifest import Manifest, ManifestError
from data_prep.prepare import DEFAULT_DEFECTS
from data_prep.progress import progress
from fam_skull import refine
from fam_skull.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from fam_skull.config import Config, ConfigError
from fam_skull.curves import plot_curves, write_metrics
from fam_skull.data import Cases, dataset, loader
from fam_skull.distributed import init_distributed, rank_spread, rng_state, set_rng_state
from fam_skull.fam.flatness import resolve_layer
from fam_skull.fam.regularizer import FAMRegularizer
from fam_skull.optim import build_optimizer, lr_factor
from fam_skull.runs import RunFolder, build_loss, load_run, model_from_config, resolve
from fam_skull.step import Stepper
from fam_skull.transforms import EpochSeededDataset, training_augmentation
from fam_skull.validation import validate

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("fam_skull.train")


class TrainingError(RuntimeError):
    """Training stopped (e.g. too many non-finite steps in a row); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run: Path
    epochs: int
    best_implant_dsc: float
    best_epoch: int


def _device(config: Config, local_rank: int) -> torch.device:
    name = config.train.device
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    return torch.device(name)


def _largest_weight(model: torch.nn.Module) -> float:
    """The largest absolute weight (inf or nan when any is not finite)."""
    return float(torch.stack([p.detach().abs().max() for p in model.parameters()]).max())


def augmentation_kinds(config: Config, manifest: Manifest) -> list[str]:
    """Defect types drawn on the fly: ``augment.defect_types``, else the generated types the manifest trained
    on, else the default set (a dataset that shipped its own defects, such as SkullBreak)."""
    if config.augment.defect_types:
        return list(config.augment.defect_types)
    trained = [k for k in manifest.data.get("options", {}).get("defects", []) if k in DEFECT_TYPES]
    return trained or list(DEFAULT_DEFECTS)


# Keys a resumed run may change; the others shape the model, the data or the optimizer state in the checkpoint.
class Trainer:
    """One training run. The constructor does everything that can fail on bad input (config, manifest, model,
    FAM layer, batch split, checkpoint to resume), so errors come before any training; :meth:`run` trains."""

    def __init__(self, cfg: Config, run: Path, *, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, self.run_dir, self.folder, self.quiet = cfg, run, RunFolder(run), quiet
        # what can fail on bad input is checked before a process group exists (torchrun's variables name the rank)
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if rank == 0:
            check_folder(run, create=False)
        if not resume and RunFolder(run).checkpoint("last").is_file():
            raise ConfigError(f"output: {run} already holds a training run; continue it with --resume {run} or set output=ANOTHER_FOLDER")
        try:
            manifest = Manifest.load(cfg.data.manifest)
        except ManifestError as e:
            raise ConfigError(f"data.manifest: {e}") from None
        spaces = ("grid", "original") if cfg.stage == "refine" else ("grid",)
        missing = [m for space in spaces for m in manifest.missing(("train", "val"), space)]
        if missing:
            raise ConfigError(
                f"data.manifest: {len(missing)} volume(s) it names are missing, e.g. {missing[0]}; "
                f"prepare the dataset again into {manifest.root}"
            )
        if cfg.data.batch_size % world:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} does not split evenly over {world} processes")
        self.device = _device(cfg, int(os.environ.get("LOCAL_RANK", "0")))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        self.grid = tuple(manifest.data["grid"])
        self.model = model_from_config(cfg, self.grid).to(self.device)
        if cfg.method == "fam":
            try:
                resolve_layer(self.model, cfg.fam.layer)
            except ValueError as e:
                raise ConfigError(f"fam.layer: {e}") from None
        self.rank, self.world, _, self._owns_group = init_distributed()
        try:
            self._build(manifest, resume)
        except BaseException:
            if self._owns_group:  # a failed start leaves no process group behind
                dist.destroy_process_group()
            raise

    def _build(self, manifest: Manifest, resume: bool) -> None:
        """Everything after the process group exists: data, loader, DDP, optimizer, FAM, the checkpoint to resume."""
        cfg = self.cfg
        validating = bool(manifest.role("val")) and self.rank == 0
        if cfg.stage == "refine":
            self._refine_data(manifest, validating)
        else:
            self.train_ds: Cases = dataset(manifest, "train", cfg.data.cache)
            a = cfg.augment
            if a.fresh_defect or a.flip or a.affine:
                augmentation = training_augmentation(
                    augmentation_kinds(cfg, manifest), a.fresh_defect, a.flip, a.affine, a.rotate_deg, a.scale
                )
                self.train_ds = EpochSeededDataset(self.train_ds, augmentation, cfg.train.seed)
            self.val_ds: Cases | None = dataset(manifest, "val", cfg.data.cache) if validating else None
        self.train_loader = loader(
            self.train_ds,
            cfg.data.batch_size // self.world,
            shuffle=True,
            seed=cfg.train.seed,
            rank=self.rank,
            world=self.world,
            num_workers=cfg.data.num_workers,
        )
        net = self.model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.net = net
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg))
        self.regularizer: FAMRegularizer | None = None
        if cfg.method == "fam":
            f = cfg.fam
            try:
                self.regularizer = FAMRegularizer(
                    net,
                    f.layer,
                    f.lam,
                    estimator=f.estimator,
                    probes=f.probes,
                    every=f.every,
                    scale_lambda=f.scale_lambda,
                    warmup_steps=f.warmup_steps,
                    seed=cfg.train.seed,
                    objective=f.objective,
                    chunk=f.chunk,
                    loss_reduction=cfg.loss.reduction,
                    conv_twins=f.conv_twins,
                )
            except ValueError as e:  # e.g. fam.chunk with a BatchNorm model
                raise ConfigError(f"fam: {e}") from None
            steps = cfg.train.epochs * len(self.train_loader)
            if f.warmup_steps >= steps and self.rank == 0:
                log.warning(
                    "fam.warmup_steps %d >= the %d steps of this run: FAM never switches on, so this run trains "
                    "exactly as the baseline; lower fam.warmup_steps or raise train.epochs",
                    f.warmup_steps,
                    steps,
                )
        self.stepper = Stepper(
            net,
            build_loss(cfg),
            self.optimizer,
            cfg.method,
            regularizer=self.regularizer,
            sam_rho=cfg.sam.rho,
            amp=cfg.train.amp and self.device.type == "cuda",
        )
        self.start_epoch, self.best, self.best_epoch = 1, -1.0, 0
        self.history: list[dict] = []
        self.nonfinite = 0
        self.resumed = resume
        if resume:
            try:
                self._restore(load_checkpoint(self.folder.checkpoint("last"), map_location=self.device))
            except CheckpointError:
                raise
            except (KeyError, RuntimeError, ValueError, TypeError) as e:  # load_state_dict's messages run to pages
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise CheckpointError(
                    f"{self.folder.checkpoint('last')}: does not fit this run's config.yaml (missing entry or "
                    f"another model: {reason}); resume it with its own config or start a new run"
                ) from None
        self._handler: logging.FileHandler | None = None
        self._writer: SummaryWriter | None = None

    def _refine_data(self, manifest: Manifest, validating: bool) -> None:
        """Refinement stage: the coarse run's probabilities for every train (val) case at the scan's resolution,
        patches of the boxes around the defects for training, whole cases for validation."""
        r = self.cfg.refine
        try:
            coarse, coarse_cfg, coarse_grid, _ = load_run(r.coarse_run, r.coarse_checkpoint, self.device)
        except (ConfigError, CheckpointError) as e:
            raise ConfigError(f"refine.coarse_run: {e}") from None
        if coarse_cfg.stage != "coarse" or tuple(coarse_grid) != self.grid:
            raise ConfigError(f"refine.coarse_run: {r.coarse_run} must be a coarse run on this manifest's grid {list(self.grid)}")
        items = refine.training_items(refine.load_cases(manifest, "train", coarse, self.device, self.quiet), r.margin_mm)
        self.train_ds = EpochSeededDataset(items, refine.patch_augmentation(r.patch), self.cfg.train.seed)
        self.val_ds = refine.load_cases(manifest, "val", coarse, self.device, self.quiet) if validating else None

    def _validate(self) -> dict:
        assert self.val_ds is not None  # rank 0 with val cases
        if self.cfg.stage == "refine":
            return refine.validate_refined(self.model, self.val_ds, self.cfg.refine.patch, self.cfg.refine.margin_mm, self.device)
        return validate(self.model, self.val_ds, self.device)

    def _restore(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{self.folder.checkpoint('last')}: checkpoint format {state.get('format')!r}, this version resumes "
                f"{CHECKPOINT_FORMAT!r}; start a new run (predict still reads the old one)"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.base_lrs = [self.cfg.optim.lr for _ in self.optimizer.param_groups]  # resume may set a new one
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
            group["initial_lr"], group["weight_decay"] = base, self.cfg.optim.weight_decay
        self.stepper.scaler.load_state_dict(state["scaler"])
        if self.regularizer is not None and state.get("regularizer"):
            self.regularizer.load_state_dict(state["regularizer"])
        set_rng_state(state["rng"])
        self.start_epoch, self.best, self.best_epoch, self.history = (
            state["epoch"] + 1,
            state["best_implant_dsc"],
            state["best_epoch"],
            state["history"],
        )

    def _state(self, epoch: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.stepper.scaler.state_dict(),
            "regularizer": self.regularizer.state_dict() if self.regularizer is not None else {},
            "rng": rng_state(),
            "best_implant_dsc": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "config": self.cfg.to_yaml(),
            "grid": list(self.grid),
        }

    def _open_logs(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder.config, self.cfg.to_yaml())
        self._handler = logging.FileHandler(self.folder.log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self._handler)
        purge = (self.start_epoch - 1) * len(self.train_loader) or None
        self._writer = SummaryWriter(str(self.folder.tensorboard), purge_step=purge)
        log.info(
            "%s %s: %d train / %d val cases, grid %s, %s, %d process(es), epochs %d-%d",
            "resuming" if self.resumed else "starting",
            self.run_dir,
            len(self.train_ds),
            len(self.val_ds or []),
            self.grid,
            self.device,
            self.world,
            self.start_epoch,
            self.cfg.train.epochs,
        )

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
        if self._owns_group:
            # free the DDP reducer before the process group: the other order can hang gloo's teardown at exit
            del self.net, self.stepper, self.regularizer
            gc.collect()
            dist.destroy_process_group()

    def _train_epoch(self, epoch: int) -> dict:
        sampler = self.train_loader.sampler
        assert isinstance(sampler, DistributedSampler)  # loader() builds one
        sampler.set_epoch(epoch)
        if isinstance(self.train_ds, EpochSeededDataset):
            self.train_ds.set_epoch(epoch)
        losses, task_losses, kappas = [], [], []
        steps = skipped = 0
        wait = busy = 0.0
        bar = progress(
            total=len(self.train_loader), desc=f"epoch {epoch}/{self.cfg.train.epochs}", quiet=self.quiet or self.rank != 0, leave=False
        )
        t0 = time.perf_counter()
        for batch in self.train_loader:
            t1 = time.perf_counter()
            result = self.stepper(batch["image"].to(self.device), batch[self.cfg.model.target].to(self.device))
            t2 = time.perf_counter()
            wait, busy, t0 = wait + t1 - t0, busy + t2 - t1, t2
            step_no = (epoch - 1) * len(self.train_loader) + steps
            steps += 1
            if result.skipped:
                skipped += 1
                self._non_finite(epoch, steps, result)
                continue
            self.nonfinite = 0
            self._check_weights(epoch, steps)
            losses.append(result.loss)
            task_losses.append(result.task_loss)
            if result.kappa is not None:
                kappas.append(result.kappa)
            if self._writer is not None:
                for key in ("loss", "task_loss", "kappa"):
                    if getattr(result, key) is not None:
                        self._writer.add_scalar(f"train/{key}", getattr(result, key), step_no)
            bar.set_postfix(loss=f"{result.task_loss:.4f}", kappa="-" if result.kappa is None else f"{result.kappa:.3g}")
            bar.update()
        bar.close()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return {
            "epoch": epoch,
            "lr": lr,
            "loss": float(np.mean(losses)) if losses else None,
            "task_loss": float(np.mean(task_losses)) if task_losses else None,
            "kappa": float(np.mean(kappas)) if kappas else None,
            "val_implant_dsc": None,
            "val_implant_hd95": None,
            "val_skull_dsc": None,
            "step_time": busy / max(steps, 1),
            "data_wait_share": wait / max(wait + busy, 1e-12),
            "skipped_steps": skipped,
            "rank_spread": rank_spread(self.model, self.world),
        }

    def _last_good(self) -> str:
        last = self.folder.checkpoint("last")
        if last.is_file():
            return f"the last good checkpoint is {last} (continue from it with --resume {self.run_dir} and a lower value)"
        return "no checkpoint was written (it diverged in the first epoch)"

    def _non_finite(self, epoch: int, step: int, result) -> None:
        self.nonfinite += 1
        log.warning(
            "epoch %d step %d: non-finite loss %s / kappa %s or gradient, step skipped", epoch, step, result.task_loss, result.kappa
        )
        if self.nonfinite >= self.cfg.train.max_nonfinite:
            raise TrainingError(
                f"{self.nonfinite} non-finite steps in a row (epoch {epoch}); lower optim.lr or fam.lam; {self._last_good()}"
            )

    def _check_weights(self, epoch: int, step: int) -> None:
        """Stop before a diverged model is saved: a finite loss does not mean sane weights (a huge learning rate
        drives them to ~1e30 while the Dice loss stays finite)."""
        largest = _largest_weight(self.model)
        if not largest <= self.cfg.train.max_weight:
            raise TrainingError(
                f"epoch {epoch} step {step}: a weight reached {largest:.3g} (train.max_weight "
                f"{self.cfg.train.max_weight:g}), training diverged; lower optim.lr or fam.lam; {self._last_good()}"
            )

    def _end_epoch(self, epoch: int, row: dict) -> None:
        """Rank 0: validate, checkpoint (last, best, listed epochs), metrics, curves, TensorBoard, log line."""
        cfg = self.cfg
        is_best = False
        if self.val_ds is not None and (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs):
            row.update(self._validate())
            if row["val_implant_dsc"] > self.best:
                self.best, self.best_epoch, is_best = row["val_implant_dsc"], epoch, True
        self.history.append(row)
        state = self._state(epoch)
        save_checkpoint(state, self.folder.checkpoint("last"))
        if is_best:
            save_checkpoint(state, self.folder.checkpoint("best"))
        if epoch in cfg.train.save_epochs:
            save_checkpoint(state, self.folder.checkpoint(f"epoch_{epoch:04d}"))
        write_metrics(self.history, self.folder.metrics)
        plot_curves(self.history, self.folder.curves, self.best_epoch)
        writer = self._writer
        assert writer is not None  # _open_logs ran on rank 0
        for key in ("kappa", "val_implant_dsc", "val_implant_hd95", "val_skull_dsc", "step_time", "data_wait_share"):
            if row[key] is not None:
                writer.add_scalar(f"epoch/{key}", row[key], epoch)
        writer.flush()
        if row["rank_spread"]:
            log.error("epoch %d: replicas differ across ranks by %.3g", epoch, row["rank_spread"])

        def fmt(value, spec):
            return "-" if value is None else format(value, spec)

        log.info(
            "epoch %d: loss %s, task %s, kappa %s, val implant DSC %s HD95 %s mm, %.3f s/step, data wait %.1f%%%s",
            epoch,
            fmt(row["loss"], ".4f"),
            fmt(row["task_loss"], ".4f"),
            fmt(row["kappa"], ".4g"),
            fmt(row["val_implant_dsc"], ".4f"),
            fmt(row["val_implant_hd95"], ".2f"),
            row["step_time"],
            100 * row["data_wait_share"],
            f", {row['skipped_steps']} skipped" if row["skipped_steps"] else "",
        )

    def run(self) -> TrainResult:
        """Train from the first unfinished epoch to ``train.epochs``.

        Raises:
            FolderError: another process trains into this run folder.
        """
        with claim(self.run_dir, "train") if self.rank == 0 else nullcontext():
            return self._run()

    def _run(self) -> TrainResult:
        try:
            if self.rank == 0:
                self._open_logs()
            for epoch in range(self.start_epoch, self.cfg.train.epochs + 1):
                row = self._train_epoch(epoch)
                if self.rank == 0:
                    self._end_epoch(epoch, row)
                if self.world > 1:
                    dist.barrier()
        finally:
            self._close()
        return TrainResult(self.run_dir, self.cfg.train.epochs, self.best, self.best_epoch)


def train(
    config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, resume: str | Path | None = None, quiet: bool = False
) -> TrainResult:
    """Train from a config (object or YAML path, with ``key=value`` overrides), or resume a run folder.

    Raises:
        ConfigError: before any work, for a bad key, value, manifest, model or FAM layer.
        CheckpointError: the checkpoint to resume cannot be read.
        TrainingError: ``train.max_nonfinite`` non-finite steps in a row.
    """
    cfg, run = resolve(config, overrides, resume)
    return Trainer(cfg, run, resume=resume is not None, quiet=quiet).run()
