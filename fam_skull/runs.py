"""What a run folder holds and how its parts are built: the model and loss from a config, a trained run loaded
back, and the label a run carries in tables. The stages (train, predict, refine, measure, sweep) ask here."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss

from data_prep.io import read_json
from fam_skull.checkpoint import READABLE_FORMATS, CheckpointError, load_checkpoint
from fam_skull.config import Config, ConfigError, load_config
from fam_skull.fam.regularizer import DEFAULT_OBJECTIVE
from fam_skull.models import build_model, network_spec


@dataclass(frozen=True)
class RunFolder:
    """The files of a run folder, named in one place."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def checkpoint(self, name: str) -> Path:
        """``best``, ``last``, ``epoch_NNNN`` (in ``checkpoints/``) or a path ending in .pt."""
        return Path(name) if name.endswith(".pt") else self.path / "checkpoints" / f"{name}.pt"


def build_loss(config: Config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task loss on 2-class softmax outputs with one-hot targets (``loss.name``: Dice, Dice + cross-entropy
    or Dice + focal, MONAI's), times ``loss.weight``."""
    cls = {"dice": DiceLoss, "dice_ce": DiceCELoss, "dice_focal": DiceFocalLoss}[config.loss.name]
    loss = cls(to_onehot_y=True, softmax=True, include_background=config.loss.include_background, reduction=config.loss.reduction)
    weight = config.loss.weight
    return loss if weight == 1.0 else (lambda outputs, targets: weight * loss(outputs, targets))


def _network_arguments(config: Config, grid: Sequence[int]) -> dict:
    m = config.model
    return dict(
        in_channels=2 if config.stage == "refine" else 1,
        channels=m.channels,
        strides=m.strides,
        num_res_units=m.num_res_units,
        norm=m.norm,
        act=m.act,
        dropout=m.dropout,
        latent_size=m.latent_size,
        spatial_size=grid,
    )


def network_spec_from_config(config: Config, grid: Sequence[int]) -> dict:
    """The run's network as a MONAI config component (``_target_`` + arguments: an exported bundle's network_def)."""
    try:
        return network_spec(config.model.name, **_network_arguments(config, grid))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def model_from_config(config: Config, grid: Sequence[int]) -> torch.nn.Module:
    """The run's network; a refinement network takes 2 channels (defective skull, coarse implant probability)."""
    try:
        return build_model(config.model.name, **_network_arguments(config, grid))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def method_label(config: Config) -> str:
    """How a run is named in tables: baseline, FAM with its lambda, or SAM with its rho."""
    if config.method == "fam":
        if config.fam.objective == "l2":
            return f"L2 on the FAM layer, lambda = {config.fam.lam:g}"
        kind = "" if config.fam.objective == DEFAULT_OBJECTIVE else f" ({config.fam.objective})"
        return f"FAM{kind}, lambda = {config.fam.lam:g}"
    if config.method == "sam":
        return f"SAM, rho = {config.sam.rho:g}"
    return "baseline"


def load_run(
    run: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config, tuple[int, ...], Path]:
    """The trained model (eval mode), its config and training grid.

    ``checkpoint`` is ``best``, ``last``, ``epoch_NNNN`` or a path; ``best`` falls back to ``last`` when a run
    never validated.
    """
    run = Path(run)
    folder = RunFolder(run)
    config = load_config(folder.config)
    path = folder.checkpoint(checkpoint)
    if checkpoint == "best" and not path.is_file():
        path = folder.checkpoint("last")
    state = load_checkpoint(path, map_location=device)
    if state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r} is not one this version reads "
            f"({', '.join(READABLE_FORMATS)}); use the fam-skull version that wrote it"
        )
    grid = tuple(state["grid"])
    model = model_from_config(config, grid)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, grid, path


INDEX = "predictions.json"  # a predictions folder's index, written by predict, read by evaluate and report


def read_index(folder: Path) -> dict:
    """A predictions folder's index.

    Raises:
        FileNotFoundError, ValueError: missing, unreadable, or not an index written by ``fam-skull predict``.
    """
    path = folder / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {INDEX}; run 'fam-skull predict' into this folder first")
    index = read_json(path)
    if not isinstance(index, dict) or not isinstance(index.get("cases"), dict) or not isinstance(index.get("method"), str):
        raise ValueError(f"{path}: not an index written by 'fam-skull predict' (no 'method' and 'cases'); predict again with --force")
    return index


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_") or "method"


# Keys a resumed run may change; the others shape the model, the data or the optimizer state in the checkpoint.
RESUMABLE = (
    "train.epochs",
    "train.val_every",
    "train.save_epochs",
    "train.threads",
    "train.device",
    "train.amp",
    "train.max_nonfinite",
    "train.max_weight",
    "data.num_workers",
    "data.cache",
    "optim.lr",
    "optim.weight_decay",
    "fam.lam",
    "fam.chunk",
    "fam.conv_twins",
    "fam.every",
    "fam.probes",
    "sam.rho",
)


def _flat(values: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in values.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def _unused_sections(config: Config) -> tuple[str, ...]:
    """Key prefixes a run of this method and stage never reads (a baseline run's ``fam.*``, a refinement run's
    ``augment.*``): a change there is no change to the run."""
    unused = [f"{method}." for method in ("fam", "sam") if config.method != method]
    unused.append("augment." if config.stage == "refine" else "refine.")
    return tuple(unused)


def resolve(config: Config | str | Path | None, overrides: Sequence[str] = (), resume: str | Path | None = None) -> tuple[Config, Path]:
    """The validated config and run folder of a new or resumed run.

    On resume the run's own config.yaml is the start; ``config`` (an object or a YAML path), when given, and the
    overrides may change the :data:`RESUMABLE` keys of it (the run folder stays the one resumed).

    Raises:
        ConfigError: on resume, a change of a key outside :data:`RESUMABLE`.
    """
    if resume is not None:
        run = Path(resume)
        config_file = RunFolder(run).config
        if not config_file.is_file():
            raise ConfigError(f"--resume {run}: no config.yaml there; is it a fam-skull run folder?")
        saved = load_config(config_file)
        if config is None:
            wanted = load_config(config_file, overrides)
        elif isinstance(config, Config):
            wanted = load_config(base=config.to_dict(), overrides=overrides)
        else:
            wanted = load_config(config, overrides)
        wanted = replace(wanted, output=saved.output)
        before, after = _flat(saved.to_dict()), _flat(wanted.to_dict())
        unused = _unused_sections(saved)
        fixed = [
            f"{k} ({before[k]!r} -> {after[k]!r})"
            for k in after
            if after[k] != before[k] and k not in RESUMABLE and not k.startswith(unused)
        ]
        if fixed:
            raise ConfigError(
                f"--resume {run}: {', '.join(fixed)} cannot change on resume (the checkpoint was trained "
                f"with the old value); start a new run instead. These may change: {', '.join(RESUMABLE)}"
            )
        return wanted, run
    if isinstance(config, Config):
        return config, Path(config.output)
    cfg = load_config(config, overrides)
    return cfg, Path(cfg.output)
