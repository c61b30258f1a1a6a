"""A run's config and folder, new or resumed: which keys a resumed run may change, and the refusal of the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from fam_skull.common.paths import RunFolder
from fam_skull.config import Config, ConfigError, load_config, validate

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

    A Config object is validated as a YAML file would be (a typo such as ``method='famm'`` is refused).

    Raises:
        ConfigError: an invalid config; on resume, a change of a key outside :data:`RESUMABLE`.
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
        cfg = validate(config) if not overrides else load_config(base=config.to_dict(), overrides=overrides)
        return cfg, Path(cfg.output)
    cfg = load_config(config, overrides)
    return cfg, Path(cfg.output)
