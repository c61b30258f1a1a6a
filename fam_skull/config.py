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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_prep.defects import DEFECT_TYPES
from fam_skull.fam.flatness import ESTIMATORS, OBJECTIVES, Estimator, Objective
from fam_skull.fam.regularizer import DEFAULT_LAMBDA, DEFAULT_OBJECTIVE, Reduction
from fam_skull.fam.sam import DEFAULT_RHO


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass
class DataConfig:
    manifest: str = ""  # the manifest.json written by 'fam-skull prepare' (or its folder)
    batch_size: int = 2  # global batch; split evenly across torchrun processes
    cache: bool = True  # keep decoded volumes in memory (MONAI CacheDataset)
    num_workers: int = 0  # DataLoader workers


@dataclass
class ModelConfig:
    name: str = "unet"  # unet | autoencoder | linear_ae
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_res_units: int = 2
    norm: str = "instance"
    act: str = "prelu"
    dropout: float = 0.0
    latent_size: int = 32  # linear_ae only
    target: str = "implant"  # what the network outputs: implant (the missing bone) | complete (the whole skull)


@dataclass
class LossConfig:
    name: str = "dice_ce"  # dice | dice_ce (Dice + cross-entropy) | dice_focal (Dice + focal)
    include_background: bool = False  # Dice over the background class too (the published configs: true)
    weight: float = 1.0  # the FAM paper's skull run used 80
    reduction: Reduction = "mean"  # how the loss combines voxels and samples: mean | sum


@dataclass
class AugmentConfig:
    """Training-time augmentation, drawn afresh for every item of every epoch from (train.seed, epoch, item)."""

    fresh_defect: float = 0.8  # probability that a training item gets a new defect drawn on its complete skull
    defect_types: list[str] = field(default_factory=list)  # empty: the manifest's generated training types
    flip: float = 0.5  # probability of a left-right flip
    affine: float = 0.0  # probability of a random rotation and scaling (off: it lowered implant DSC on the demo)
    rotate_deg: float = 10.0  # rotation range about each axis (+-degrees)
    scale: float = 0.1  # scaling range (+-fraction)


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "none"  # none | poly (nnU-Net's (1 - epoch/epochs)^0.9) | cosine; stepped per epoch


@dataclass
class FAMConfig:
    lam: float = DEFAULT_LAMBDA
    layer: str = "bottleneck"
    objective: Objective = DEFAULT_OBJECTIVE  # fisher (Gauss-Newton, >= 0) | kappa | published (the authors' ||W|| Tr(H)) | l2 (control)
    estimator: Estimator = "hutchinson"  # hutchinson | exact
    probes: int = 1
    every: int = 1
    scale_lambda: bool = True
    warmup_steps: int = 0
    conv_twins: bool = False  # convolutions after the FAM layer differentiated on their own kernels (for cuDNN; same values)
    chunk: int | None = None  # samples per FAM pass (null: the batch); fewer: less memory, one more forward per chunk, same gradient


@dataclass
class SAMConfig:
    rho: float = DEFAULT_RHO


@dataclass
class TrainConfig:
    epochs: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # CUDA only
    val_every: int = 1
    save_epochs: list[int] = field(default_factory=lambda: [100])
    max_nonfinite: int = 5  # consecutive non-finite steps that stop the run
    max_weight: float = 1e6  # a weight beyond this (in absolute value) means training diverged: the run stops
    threads: int = 0  # CPU threads (0: PyTorch's default)


@dataclass
class RefineConfig:
    """The refinement stage (``stage: refine``): a network at the scan's resolution, in a box around the coarse
    implant, fed the defective skull and the coarse run's upsampled implant probability."""

    coarse_run: str = ""  # the finished coarse run folder
    coarse_checkpoint: str = "best"
    patch: list[int] = field(default_factory=lambda: [48, 48, 48])  # training crop and sliding window (voxels)
    margin_mm: float = 10.0  # the box: the coarse implant's bounding box grown by this margin


@dataclass
class Config:
    method: str = "baseline"  # baseline | fam | sam
    stage: str = "coarse"  # coarse (the training grid) | refine (the scan's resolution, around the coarse implant)
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


CHOICES = {
    "method": ("baseline", "fam", "sam"),
    "stage": ("coarse", "refine"),
    "model.name": ("unet", "autoencoder", "linear_ae"),
    "model.target": ("implant", "complete"),
    "loss.name": ("dice", "dice_ce", "dice_focal"),
    "loss.reduction": typing.get_args(Reduction),
    "optim.name": ("adam", "adamw", "sgd"),
    "optim.scheduler": ("none", "poly", "cosine"),
    "fam.estimator": ESTIMATORS,
    "fam.objective": OBJECTIVES,
}
POSITIVE = (
    "train.max_weight",
    "data.batch_size",
    "fam.probes",
    "fam.every",
    "train.val_every",
    "train.max_nonfinite",
    "optim.lr",
    "sam.rho",
    "loss.weight",
)
PROBABILITIES = ("augment.fresh_defect", "augment.flip", "augment.affine")
NON_NEGATIVE = (
    "refine.margin_mm",
    "augment.rotate_deg",
    "augment.scale",
    "fam.lam",
    "fam.warmup_steps",
    "train.epochs",
    "data.num_workers",
    "optim.weight_decay",
    "model.dropout",
    "train.threads",
)


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


def _get(config: Config, key: str):
    obj = config
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _floats(section, prefix: str = ""):
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _floats(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            yield f"{prefix}{f.name}", value


def validate(config: Config) -> Config:
    """Value checks that types cannot express; raises ConfigError naming the key."""
    for key, value in _floats(config):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
    for key, allowed in CHOICES.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {_get(config, key)!r}")
    for key in POSITIVE:
        if _get(config, key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {_get(config, key)}")
    if config.fam.chunk is not None and config.fam.chunk < 1:
        raise ConfigError(f"fam.chunk: samples per FAM pass, must be >= 1 or null, got {config.fam.chunk}")
    for key in NON_NEGATIVE:
        if _get(config, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {_get(config, key)}")
    for key in PROBABILITIES:
        if not 0 <= _get(config, key) <= 1:
            raise ConfigError(f"{key}: a probability, must lie in [0, 1], got {_get(config, key)}")
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
    out = yaml.safe_load(yaml.safe_dump(base)) or {}
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
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return validate(build_section(Config, merge(values, list(overrides))))
