"""A run's whole state as a checkpoint and back: the weights, optimizer, schedule, AMP scaler, regularizer, every
RNG and the progress so far, so a resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fam_skull.common.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from fam_skull.config import Config
from fam_skull.train.distributed import rng_state, set_rng_state
from fam_skull.train.parts import Parts


@dataclass
class Progress:
    """How far a run got: the next epoch, the best validation implant DSC and its epoch, the epoch rows."""

    start_epoch: int = 1
    best: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def training_state(config: Config, parts: Parts, grid: tuple[int, ...], epoch: int, progress: Progress) -> dict:
    """The checkpoint after ``epoch`` (plain tensors and numbers: loaded with ``weights_only=True``)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.stepper.scaler.state_dict(),
        "regularizer": parts.regularizer.state_dict() if parts.regularizer is not None else {},
        "rng": rng_state(),
        "best_implant_dsc": progress.best,
        "best_epoch": progress.best_epoch,
        "history": progress.history,
        "config": config.to_yaml(),
        "grid": list(grid),
    }


def restore(path: Path, config: Config, parts: Parts) -> Progress:
    """Load ``path`` into ``parts`` (the learning rate and weight decay from ``config``: a resume may change them).

    Raises:
        CheckpointError: unreadable, another format, or it does not fit this run's model (named, with the reason).
    """
    state = load_checkpoint(path, map_location=next(parts.model.parameters()).device)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}, this version resumes {CHECKPOINT_FORMAT!r}; "
            "start a new run (predict still reads the old one)"
        )
    try:
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.stepper.scaler.load_state_dict(state["scaler"])
        if parts.regularizer is not None and state.get("regularizer"):
            parts.regularizer.load_state_dict(state["regularizer"])
        set_rng_state(state["rng"])
        progress = Progress(state["epoch"] + 1, state["best_implant_dsc"], state["best_epoch"], state["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # load_state_dict's messages run to pages
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: does not fit this run's config.yaml (missing entry or another model: {reason}); "
            "resume it with its own config or start a new run"
        ) from None
    scheduler, optimizer = parts.scheduler, parts.optimizer
    scheduler.base_lrs = [config.optim.lr for _ in optimizer.param_groups]
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * scheduler.lr_lambdas[0](scheduler.last_epoch)
        group["initial_lr"], group["weight_decay"] = base, config.optim.weight_decay
    return progress
