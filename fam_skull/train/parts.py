"""What a training run is assembled from, built from its config: the checked inputs, the data of either stage,
the network (DDP-wrapped under torchrun), optimizer, schedule, FAM regularizer and the step."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data_prep.defects import DEFECT_TYPES
from data_prep.folder import check_folder
from data_prep.manifest import Manifest, ManifestError
from data_prep.prepare import DEFAULT_DEFECTS
from fam_skull.common.checkpoint import CheckpointError
from fam_skull.common.paths import RunFolder
from fam_skull.config import Config, ConfigError
from fam_skull.fam.flatness import resolve_layer
from fam_skull.fam.regularizer import FAMRegularizer
from fam_skull.networks.models import model_from_config
from fam_skull.networks.trained import load_run
from fam_skull.train import refine_data
from fam_skull.train.augment import EpochSeededDataset, training_augmentation
from fam_skull.train.data import Cases, dataset, loader
from fam_skull.train.loss import build_loss
from fam_skull.train.optim import build_optimizer, lr_factor
from fam_skull.train.step import Stepper

log = logging.getLogger("fam_skull.train")


def device_for(config: Config, local_rank: int) -> torch.device:
    name = config.train.device
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    return torch.device(name)


def checked_manifest(config: Config, run: Path, resume: bool) -> Manifest:
    """The run's manifest, after every check that needs no process group: the output folder, an earlier run in
    it, the manifest and the volumes it names, the batch split over torchrun's processes.

    Raises:
        ConfigError, FolderError: naming the key or folder and what to do.
    """
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if rank == 0:
        check_folder(run, create=False)
    if not resume and RunFolder(run).checkpoint("last").is_file():
        raise ConfigError(f"output: {run} already holds a training run; continue it with --resume {run} or set output=ANOTHER_FOLDER")
    try:
        manifest = Manifest.load(config.data.manifest)
    except ManifestError as e:
        raise ConfigError(f"data.manifest: {e}") from None
    spaces = ("grid", "original") if config.stage == "refine" else ("grid",)
    missing = [m for space in spaces for m in manifest.missing(("train", "val"), space)]
    if missing:
        raise ConfigError(
            f"data.manifest: {len(missing)} volume(s) it names are missing, e.g. {missing[0]}; "
            f"prepare the dataset again into {manifest.root}"
        )
    if config.data.batch_size % world:
        raise ConfigError(f"data.batch_size: {config.data.batch_size} does not split evenly over {world} processes")
    return manifest


def network(config: Config, grid: tuple[int, ...], device: torch.device) -> torch.nn.Module:
    """The run's network on ``device``, its FAM layer checked."""
    model = model_from_config(config, grid).to(device)
    if config.method == "fam":
        try:
            resolve_layer(model, config.fam.layer)
        except ValueError as e:
            raise ConfigError(f"fam.layer: {e}") from None
    return model


def augmentation_kinds(config: Config, manifest: Manifest) -> list[str]:
    """Defect types drawn on the fly: ``augment.defect_types``, else the generated types the manifest trained
    on, else the default set (a dataset that shipped its own defects, such as SkullBreak)."""
    if config.augment.defect_types:
        return list(config.augment.defect_types)
    trained = [k for k in manifest.data.get("options", {}).get("defects", []) if k in DEFECT_TYPES]
    return trained or list(DEFAULT_DEFECTS)


def coarse_data(config: Config, manifest: Manifest, validating: bool) -> tuple[Cases, Cases | None]:
    """Grid volumes with the run's augmentation (fresh defects, flips, affine), and the validation cases."""
    train_ds: Cases = dataset(manifest, "train", config.data.cache)
    a = config.augment
    if a.fresh_defect or a.flip or a.affine:
        augmentation = training_augmentation(
            augmentation_kinds(config, manifest), a.fresh_defect, a.flip, a.affine, a.rotate_deg, a.scale, a.elastic, a.crop, a.thick_slices
        )
        train_ds = EpochSeededDataset(train_ds, augmentation, config.train.seed)
    return train_ds, dataset(manifest, "val", config.data.cache) if validating else None


def refinement_data(
    config: Config, manifest: Manifest, grid: tuple[int, ...], validating: bool, device: torch.device, quiet: bool
) -> tuple[Cases, Cases | None]:
    """Patches of the boxes around the defects at the scan's resolution, with the coarse run's probabilities;
    whole cases for validation."""
    r = config.refine
    try:
        coarse, coarse_cfg, coarse_grid, _ = load_run(r.coarse_run, r.coarse_checkpoint, device)
    except (ConfigError, CheckpointError) as e:
        raise ConfigError(f"refine.coarse_run: {e}") from None
    if coarse_cfg.stage != "coarse" or tuple(coarse_grid) != grid:
        raise ConfigError(f"refine.coarse_run: {r.coarse_run} must be a coarse run on this manifest's grid {list(grid)}")
    kinds = augmentation_kinds(coarse_cfg, manifest) if r.fresh_defects else ()
    items = refine_data.training_set(manifest, coarse, device, r.margin_mm, kinds, r.fresh_defects, config.train.seed, quiet)
    train_ds = EpochSeededDataset(items, refine_data.patch_augmentation(r.patch), config.train.seed)
    return train_ds, refine_data.load_cases(manifest, "val", coarse, device, quiet) if validating else None


def regularizer(config: Config, net: torch.nn.Module, steps: int, rank: int) -> FAMRegularizer | None:
    """The FAM regularizer of a ``method: fam`` run (None otherwise); warns when its warm-up outlasts the run."""
    if config.method != "fam":
        return None
    f = config.fam
    try:
        reg = FAMRegularizer(
            net,
            f.layer,
            f.lam,
            estimator=f.estimator,
            probes=f.probes,
            trace_probes=f.trace_probes,
            every=f.every,
            scale_lambda=f.scale_lambda,
            warmup_steps=f.warmup_steps,
            seed=config.train.seed,
            objective=f.objective,
            chunk=f.chunk,
            loss_reduction=config.loss.reduction,
            conv_twins=f.conv_twins,
        )
    except ValueError as e:  # e.g. fam.chunk with a BatchNorm model
        raise ConfigError(f"fam: {e}") from None
    if f.warmup_steps >= steps and rank == 0:
        log.warning(
            "fam.warmup_steps %d >= the %d steps of this run: FAM never switches on, so this run trains exactly as the "
            "baseline; lower fam.warmup_steps or raise train.epochs",
            f.warmup_steps,
            steps,
        )
    return reg


@dataclass
class Parts:
    """The assembled run: ``model`` is the bare network (checkpoints, validation), ``net`` what the step runs
    (the DDP wrapper under torchrun)."""

    model: torch.nn.Module
    net: torch.nn.Module
    train_ds: Cases
    val_ds: Cases | None
    train_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    regularizer: FAMRegularizer | None
    stepper: Stepper


def assemble(config: Config, manifest: Manifest, model: torch.nn.Module, device: torch.device, rank: int, world: int, quiet: bool) -> Parts:
    """Everything after the process group exists: data, loader, DDP, optimizer, schedule, FAM, the step."""
    grid = tuple(manifest.data["grid"])
    validating = bool(manifest.role("val")) and rank == 0
    if config.stage == "refine":
        train_ds, val_ds = refinement_data(config, manifest, grid, validating, device, quiet)
    else:
        train_ds, val_ds = coarse_data(config, manifest, validating)
    train_loader = loader(
        train_ds,
        config.data.batch_size // world,
        shuffle=True,
        seed=config.train.seed,
        rank=rank,
        world=world,
        num_workers=config.data.num_workers,
    )
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    reg = regularizer(config, net, config.train.epochs * len(train_loader), rank)
    stepper = Stepper(
        net,
        build_loss(config),
        optimizer,
        config.method,
        regularizer=reg,
        sam_rho=config.sam.rho,
        amp=config.train.amp and device.type == "cuda",
    )
    return Parts(model, net, train_ds, val_ds, train_loader, optimizer, scheduler, reg, stepper)
