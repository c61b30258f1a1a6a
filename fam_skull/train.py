"""``fam-skull train``: baseline, FAM or SAM training of a 3D network on a prepared manifest.

A run folder holds ``config.yaml`` (resolved), ``log.txt``, ``metrics.csv``, ``tb/`` (TensorBoard),
``curves.png`` and ``checkpoints/{last,best,epoch_NNNN}.pt``. ``last.pt`` is written atomically after every
epoch, so a kill loses at most the epoch in progress, and ``resume`` continues exactly where it stopped.
Under ``torchrun`` every process trains a DistributedDataParallel replica on its share of each global batch;
rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data_prep.io import atomic_write_text
from data_prep.manifest import Manifest, ManifestError
from fam_skull.checkpoint import load_checkpoint, save_checkpoint
from fam_skull.config import Config, ConfigError, load_config
from fam_skull.data import dataset, loader
from fam_skull.flatness import resolve_layer
from fam_skull.models import build_model
from fam_skull.regularizer import FAMRegularizer
from fam_skull.step import Stepper

log = logging.getLogger("fam_skull.train")
CHECKPOINT_FORMAT = "fam-skull-checkpoint/1"


class TrainingError(RuntimeError):
    """Training stopped (e.g. too many non-finite steps in a row); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run: Path
    epochs: int
    best_dsc: float
    best_epoch: int


def build_loss(config: Config):
    """2-class DiceLoss on softmax outputs (one-hot targets), times ``loss.weight``."""
    from monai.losses import DiceLoss

    dice = DiceLoss(to_onehot_y=True, softmax=True, reduction=config.loss.reduction)
    weight = config.loss.weight
    return dice if weight == 1.0 else (lambda outputs, targets: weight * dice(outputs, targets))


def model_from_config(config: Config, grid) -> torch.nn.Module:
    m = config.model
    try:
        return build_model(
            m.name, channels=m.channels, strides=m.strides, num_res_units=m.num_res_units, norm=m.norm,
            act=m.act, dropout=m.dropout, latent_size=m.latent_size, spatial_size=grid,
        )
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def _optimizer(config: Config, params) -> torch.optim.Optimizer:
    o = config.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def _distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether this call started the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = world > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world == 1:
        return 0, 1, 0, False
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), started


def _device(config: Config, local_rank: int) -> torch.device:
    name = config.train.device
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    return torch.device(name)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rank_spread(model: torch.nn.Module, world: int) -> float | None:
    """Largest difference of per-tensor parameter sums across ranks (0.0 when replicas are in sync)."""
    if world == 1:
        return None
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.empty_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums)
    return float(max((g - gathered[0]).abs().max() for g in gathered))


def _finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


@torch.no_grad()
def validate(model: torch.nn.Module, val_loader, device) -> float:
    """Mean DSC of the argmax completed skull over the validation cases (on the grid)."""
    model.eval()
    scores = []
    for batch in val_loader:
        pred = model(batch["image"].to(device)).argmax(1)
        label = batch["label"].to(device)[:, 0] > 0.5
        for p, t in zip(pred.bool(), label):
            total = p.sum() + t.sum()
            scores.append(1.0 if total == 0 else float(2 * (p & t).sum() / total))
    return float(np.mean(scores))


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["task_loss"] for h in history], label="task loss")
    axes[0].plot(epochs, [h["loss"] for h in history], label="total loss", alpha=0.6)
    axes[0].legend()
    kappa = [(h["epoch"], h["kappa"]) for h in history if h["kappa"] is not None]
    if kappa:
        axes[1].plot(*zip(*kappa), color="tab:red")
    axes[1].set_title("kappa (FAM layer, train batches)")
    val = [(h["epoch"], h["val_dsc"]) for h in history if h["val_dsc"] is not None]
    if val:
        axes[2].plot(*zip(*val), marker="o", color="tab:green")
    axes[2].set_title("validation DSC")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def _write_metrics(history: list[dict], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, out.getvalue())


def resolve(config: Config | str | Path | None, overrides=(), resume: str | Path | None = None) -> tuple[Config, Path]:
    """The validated config and run folder of a new or resumed run."""
    if resume is not None:
        run = Path(resume)
        if not (run / "config.yaml").is_file():
            raise ConfigError(f"--resume {run}: no config.yaml there; is it a fam-skull run folder?")
        return load_config(run / "config.yaml", overrides), run
    if isinstance(config, Config):
        return config, Path(config.output)
    cfg = load_config(config, overrides)
    return cfg, Path(cfg.output)


def train(config: Config | str | Path | None = None, overrides=(), *, resume: str | Path | None = None, quiet: bool = False) -> TrainResult:
    """Train from a config (object or YAML path, with ``key=value`` overrides), or resume a run folder.

    Raises:
        ConfigError: before any work, for a bad key, value, manifest, model or FAM layer.
        TrainingError: ``train.max_nonfinite`` non-finite steps in a row.
    """
    cfg, run = resolve(config, overrides, resume)
    try:
        manifest = Manifest.load(cfg.data.manifest)
    except ManifestError as e:
        raise ConfigError(f"data.manifest: {e}") from None
    rank, world, local_rank, owns_group = _distributed()
    if cfg.data.batch_size % world:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} does not split evenly over {world} processes")
    device = _device(cfg, local_rank)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    grid = tuple(manifest.data["grid"])
    model = model_from_config(cfg, grid).to(device)
    if cfg.method == "fam":
        try:
            resolve_layer(model, cfg.fam.layer)
        except ValueError as e:
            raise ConfigError(f"fam.layer: {e}") from None
    train_ds = dataset(manifest, "train", cfg.data.cache, progress=False)
    val_ds = dataset(manifest, "val", cfg.data.cache) if manifest.role("val") else None
    train_loader = loader(train_ds, cfg.data.batch_size // world, shuffle=True, seed=cfg.train.seed, rank=rank, world=world, num_workers=cfg.data.num_workers)
    val_loader = loader(val_ds, 1, shuffle=False, seed=0) if val_ds is not None and rank == 0 else None

    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    optimizer = _optimizer(cfg, model.parameters())
    regularizer = None
    if cfg.method == "fam":
        f = cfg.fam
        regularizer = FAMRegularizer(net, f.layer, f.lam, estimator=f.estimator, probes=f.probes, every=f.every,
                                     scale_lambda=f.scale_lambda, warmup_steps=f.warmup_steps, seed=cfg.train.seed)
    stepper = Stepper(net, build_loss(cfg), optimizer, cfg.method, regularizer=regularizer, sam_rho=cfg.sam.rho,
                      amp=cfg.train.amp and device.type == "cuda")

    start_epoch, best, best_epoch, history = 1, -1.0, 0, []
    ckpt_dir = run / "checkpoints"
    if resume is not None:
        state = load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stepper.scaler.load_state_dict(state["scaler"])
        if regularizer is not None and state.get("regularizer"):
            regularizer.load_state_dict(state["regularizer"])
        _set_rng_state(state["rng"])
        start_epoch, best, best_epoch, history = state["epoch"] + 1, state["best_dsc"], state["best_epoch"], state["history"]

    handler = writer = None
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "config.yaml", cfg.to_yaml())
        handler = logging.FileHandler(run / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tb"), purge_step=(start_epoch - 1) * len(train_loader) or None)
        log.info("%s %s: %d train / %d val cases, grid %s, %s, %d process(es), epochs %d-%d",
                 "resuming" if resume else "starting", run, len(train_ds), len(val_ds or []), grid, device, world, start_epoch, cfg.train.epochs)
    try:
        nonfinite = 0
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            train_loader.sampler.set_epoch(epoch)
            sums = {"loss": 0.0, "task_loss": 0.0}
            kappas, steps, skipped, wait, busy = [], 0, 0, 0.0, 0.0
            bar = tqdm(total=len(train_loader), desc=f"epoch {epoch}/{cfg.train.epochs}", disable=quiet or rank != 0, leave=False)
            t0 = time.perf_counter()
            for batch in train_loader:
                t1 = time.perf_counter()
                result = stepper(batch["image"].to(device), batch["label"].to(device))
                t2 = time.perf_counter()
                wait, busy, t0 = wait + t1 - t0, busy + t2 - t1, t2
                step_no = (epoch - 1) * len(train_loader) + steps
                steps += 1
                if result.skipped:
                    skipped += 1
                    nonfinite += 1
                    log.warning("epoch %d step %d: non-finite loss %s / kappa %s, step skipped", epoch, steps, result.task_loss, result.kappa)
                    if nonfinite >= cfg.train.max_nonfinite:
                        raise TrainingError(
                            f"{nonfinite} non-finite steps in a row (epoch {epoch}); lower optim.lr or fam.lam. "
                            f"The last good checkpoint is {ckpt_dir / 'last.pt'}"
                        )
                    continue
                nonfinite = 0
                sums["loss"] += result.loss
                sums["task_loss"] += result.task_loss
                if result.kappa is not None:
                    kappas.append(result.kappa)
                if writer is not None:
                    writer.add_scalar("train/loss", result.loss, step_no)
                    writer.add_scalar("train/task_loss", result.task_loss, step_no)
                    if result.kappa is not None:
                        writer.add_scalar("train/kappa", result.kappa, step_no)
                bar.set_postfix(loss=f"{result.task_loss:.4f}", kappa="-" if result.kappa is None else f"{result.kappa:.3g}")
                bar.update()
            bar.close()
            done = max(steps - skipped, 1)
            row = {
                "epoch": epoch,
                "loss": sums["loss"] / done,
                "task_loss": sums["task_loss"] / done,
                "kappa": float(np.mean(kappas)) if kappas else None,
                "val_dsc": None,
                "step_time": busy / max(steps, 1),
                "data_wait_share": wait / max(wait + busy, 1e-12),
                "skipped_steps": skipped,
                "rank_spread": _rank_spread(model, world),
            }
            if rank == 0:
                finite = _finite(model)
                if val_loader is not None and (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs):
                    row["val_dsc"] = validate(model, val_loader, device)
                    if finite and row["val_dsc"] > best:
                        best, best_epoch = row["val_dsc"], epoch
                        is_best = True
                    else:
                        is_best = False
                else:
                    is_best = False
                history.append(row)
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": stepper.scaler.state_dict(),
                    "regularizer": regularizer.state_dict() if regularizer is not None else {},
                    "rng": _rng_state(),
                    "best_dsc": best,
                    "best_epoch": best_epoch,
                    "history": history,
                    "config": cfg.to_yaml(),
                    "grid": list(grid),
                }
                if not finite:
                    log.error("epoch %d: weights are not finite; last.pt and best.pt are left as they were", epoch)
                else:
                    save_checkpoint(state, ckpt_dir / "last.pt")
                    if is_best:
                        save_checkpoint(state, ckpt_dir / "best.pt")
                    if epoch in cfg.train.save_epochs:
                        save_checkpoint(state, ckpt_dir / f"epoch_{epoch:04d}.pt")
                _write_metrics(history, run / "metrics.csv")
                _plot_curves(history, run / "curves.png")
                if writer is not None:
                    for key in ("kappa", "val_dsc", "step_time", "data_wait_share"):
                        if row[key] is not None:
                            writer.add_scalar(f"epoch/{key}", row[key], epoch)
                    writer.flush()
                if row["rank_spread"]:
                    log.error("epoch %d: replicas differ across ranks by %.3g", epoch, row["rank_spread"])
                log.info(
                    "epoch %d: loss %.4f, task %.4f, kappa %s, val DSC %s, %.3f s/step, data wait %.1f%%%s",
                    epoch, row["loss"], row["task_loss"], "-" if row["kappa"] is None else f"{row['kappa']:.4g}",
                    "-" if row["val_dsc"] is None else f"{row['val_dsc']:.4f}", row["step_time"], 100 * row["data_wait_share"],
                    f", {skipped} skipped" if skipped else "",
                )
            if world > 1:
                dist.barrier()
    finally:
        if writer is not None:
            writer.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if owns_group:
            dist.destroy_process_group()
    return TrainResult(run, cfg.train.epochs, best, best_epoch)
