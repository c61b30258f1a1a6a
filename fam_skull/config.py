"""Training configuration: YAML validated into typed dataclasses, with every default in one place.

Unknown keys, wrong types and invalid values are errors that name the key, raised before any work.
Overrides use dotted keys with YAML values: ``train.epochs=5 fam.lam=0.02 model.channels=[8,16,32]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from data_prep.defects import DEFECT_TYPES
from fam_skull.fam.flatness import PUBLISHED_MAX_PROBES, Estimator, Objective
from fam_skull.fam.regularizer import DEFAULT_LAMBDA, DEFAULT_OBJECTIVE, Reduction
from fam_skull.fam.sam import DEFAULT_RHO


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


Method = Literal["baseline", "fam", "sam"]
Stage = Literal["coarse", "refine"]
Network = Literal["unet", "autoencoder", "linear_ae"]
Target = Literal["implant", "complete"]
LossName = Literal["dice", "dice_ce", "dice_focal"]
OptimizerName = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["none", "poly", "cosine"]

# A field's value limit, declared with the field: checked by validate() with the key in the message.
_LIMITS: dict[str, Callable[[Any], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
}


def _limited(default: Any, limit: str) -> Any:
    return field(default=default, metadata={"limit": limit})


@dataclass
class DataConfig:
    manifest: str = ""  # the manifest.json written by 'fam-skull prepare' (or its folder)
    batch_size: int = _limited(2, "> 0")  # global batch; split evenly across torchrun processes
    cache: bool = True  # keep decoded volumes in memory (MONAI CacheDataset)
    num_workers: int = _limited(0, ">= 0")  # DataLoader workers


@dataclass
class ModelConfig:
    """The network; these are also the defaults of :func:`fam_skull.networks.models.network_spec`."""

    name: Network = "unet"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_res_units: int = _limited(2, ">= 0")
    norm: str = "instance"
    act: str = "prelu"
    dropout: float = _limited(0.0, "in [0, 1]")
    latent_size: int = _limited(32, ">= 1")  # linear_ae only
    target: Target = "implant"  # what the network outputs: implant (the missing bone) | complete (the whole skull)


@dataclass
class LossConfig:
    name: LossName = "dice_ce"  # Dice, Dice + cross-entropy, Dice + focal (MONAI's)
    include_background: bool = False  # Dice over the background class too (the published configs: true)
    weight: float = _limited(1.0, "> 0")  # the FAM paper's skull run used 80
    reduction: Reduction = "mean"  # how the loss combines voxels and samples: mean | sum


@dataclass
class AugmentConfig:
    """Training-time augmentation, drawn afresh for every item of every epoch from (train.seed, epoch, item);
    also the defaults of :func:`fam_skull.train.augment.training_augmentation`."""

    fresh_defect: float = _limited(0.8, "in [0, 1]")  # probability that a training item gets a new defect cut from its complete skull
    defect_types: list[str] = field(default_factory=list)  # empty: the manifest's generated training types
    flip: float = _limited(0.5, "in [0, 1]")  # probability of a left-right flip
    affine: float = _limited(0.0, "in [0, 1]")  # probability of a random rotation and scaling (off: it lowered implant DSC on the demo)
    rotate_deg: float = _limited(10.0, ">= 0")  # rotation range about each axis (+-degrees)
    scale: float = _limited(0.1, ">= 0")  # scaling range (+-fraction)
    elastic: float = _limited(0.0, "in [0, 1]")  # probability of a smooth elastic deformation of the skull (off until measured)
    crop: float = _limited(0.0, "in [0, 1]")  # probability of a field-of-view crop: low slices blank (no face), or the top
    thick_slices: float = _limited(0.0, "in [0, 1]")  # probability of thick slices: axial resolution lowered to 2-5x and back


@dataclass
class OptimConfig:
    name: OptimizerName = "adam"
    lr: float = _limited(1e-4, "> 0")
    weight_decay: float = _limited(0.0, ">= 0")
    momentum: float = 0.9  # sgd only
    scheduler: Scheduler = "none"  # none | poly (nnU-Net's (1 - epoch/epochs)^0.9) | cosine; stepped per epoch


@dataclass
class FAMConfig:
    lam: float = _limited(DEFAULT_LAMBDA, ">= 0")
    layer: str = "bottleneck"
    objective: Objective = DEFAULT_OBJECTIVE  # fisher (Gauss-Newton, >= 0) | kappa | published (the authors' ||W|| Tr(H)) | l2 (control)
    estimator: Estimator = "hutchinson"  # hutchinson | exact
    probes: int = _limited(1, "> 0")
    trace_probes: int = _limited(PUBLISHED_MAX_PROBES, "> 0")  # published only: the most probes of its Tr(H) estimate
    every: int = _limited(1, "> 0")
    scale_lambda: bool = True
    warmup_steps: int = _limited(0, ">= 0")
    conv_twins: bool = False  # convolutions after the FAM layer differentiated on their own kernels (for cuDNN; same values)
    # samples per FAM pass (null: the batch); fewer: less memory, one more forward per chunk, same gradient
    chunk: int | None = _limited(None, ">= 1")


@dataclass
class SAMConfig:
    rho: float = _limited(DEFAULT_RHO, "> 0")


@dataclass
class TrainConfig:
    epochs: int = _limited(100, ">= 0")
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # CUDA only
    val_every: int = _limited(1, "> 0")
    save_epochs: list[int] = field(default_factory=lambda: [100])
    max_nonfinite: int = _limited(5, "> 0")  # consecutive non-finite steps that stop the run
    max_weight: float = _limited(1e6, "> 0")  # a weight beyond this (in absolute value) means training diverged: the run stops
    threads: int = _limited(0, ">= 0")  # CPU threads (0: PyTorch's default)


@dataclass
class RefineConfig:
    """The refinement stage (``stage: refine``): a network at the scan's resolution, in a box around the coarse
    implant, fed the defective skull and the coarse run's upsampled implant probability."""

    coarse_run: str = ""  # the finished coarse run folder
    coarse_checkpoint: str = "best"
    patch: list[int] = field(default_factory=lambda: [48, 48, 48])  # training crop and sliding window (voxels)
    margin_mm: float = _limited(10.0, ">= 0")  # the box: the coarse implant's bounding box grown by this margin
    # fresh defects per training skull, cut at the scan's resolution from the coarse run's drawn types and fixed for
    # the run (seeded by train.seed); each is one more training box beside the prepared defect
    fresh_defects: int = _limited(0, ">= 0")


@dataclass
class Config:
    method: Method = "baseline"
    stage: Stage = "coarse"  # coarse (the training grid) | refine (the scan's resolution, around the coarse implant)
    output: str = "runs/run"  # the run folder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fam: FAMConfig = field(default_factory=FAMConfig)
    sam: SAMConfig = field(default_factory=SAMConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def method_label(config: Config) -> str:
    """How a run is named in tables: baseline, FAM with its lambda (and objective when not the default), the L2
    control, or SAM with its rho."""
    if config.method == "fam":
        if config.fam.objective == "l2":
            return f"L2 on the FAM layer, lambda = {config.fam.lam:g}"
        kind = "" if config.fam.objective == DEFAULT_OBJECTIVE else f" ({config.fam.objective})"
        return f"FAM{kind}, lambda = {config.fam.lam:g}"
    if config.method == "sam":
        return f"SAM, rho = {config.sam.rho:g}"
    return "baseline"


def _coerce(value, annotation, key: str):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(value, options[0], key)
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(annotation)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # PyYAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation is dict and isinstance(value, dict):
        return value
    if annotation in (int, str, bool) and type(value) is annotation:
        return value
    raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")


def build_section(cls: type, values: dict, prefix: str = "") -> Any:
    """A dataclass from a mapping, with its keys and types checked (errors name ``prefix + key``)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (valid: {', '.join(names)})"
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
        annotation = hints[key]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            kwargs[key] = build_section(annotation, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, annotation, f"{prefix}{key}")
    return cls(**kwargs)


def _check_fields(section: Any, prefix: str = "") -> None:
    """Every field's own rules: finite numbers, Literal choices, and the limit declared beside it."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        key, value = f"{prefix}{f.name}", getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{key}.")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        if typing.get_origin(hints[f.name]) is typing.Literal and value not in typing.get_args(hints[f.name]):
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, typing.get_args(hints[f.name])))}, got {value!r}")
        limit = f.metadata.get("limit")
        if limit is not None and value is not None and not _LIMITS[limit](value):
            raise ConfigError(f"{key}: must be {limit}, got {value}")


def validate(config: Config) -> Config:
    """Check a config however it was made (YAML, overrides or Python); raises ConfigError naming the key."""
    _check_fields(config)
    unknown = [k for k in config.augment.defect_types if k not in DEFECT_TYPES]
    if unknown:
        raise ConfigError(f"augment.defect_types: unknown type(s) {unknown}; choose from {', '.join(DEFECT_TYPES)}")
    if config.stage == "refine":
        if not config.refine.coarse_run:
            raise ConfigError("refine.coarse_run: required with stage: refine (the finished coarse run folder)")
        if config.model.target != "implant" or config.model.name != "unet":
            raise ConfigError("stage: refine trains a unet with model.target: implant")
        if len(config.refine.patch) != 3 or min(config.refine.patch) < 8:
            raise ConfigError(f"refine.patch: three sizes >= 8 voxels, got {config.refine.patch}")
    if not config.data.manifest:
        raise ConfigError("data.manifest: required (the manifest.json written by 'fam-skull prepare')")
    return config


def apply(base: dict, settings: dict) -> dict:
    """A copy of the nested dict ``base`` with ``settings`` (dotted keys -> Python values) set in it."""
    out = yaml.safe_load(yaml.safe_dump(base, sort_keys=False)) or {}
    for key, value in settings.items():
        node = out
        parts = str(key).strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (YAML values) to a nested dict."""
    settings = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        settings[key] = yaml.safe_load(raw)
    try:
        return apply(base, settings)
    except ConfigError as e:
        raise ConfigError(f"override {e}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), base: dict | None = None) -> Config:
    """Read a YAML config (or start from ``base``), apply overrides, and validate.

    Raises:
        ConfigError: unknown key, wrong type or invalid value (the message names the key), or an unreadable file.
    """
    values = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return validate(build_section(Config, merge(values, list(overrides))))
