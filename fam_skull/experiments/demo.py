"""``fam-skull demo``: synthetic skulls -> prepare -> train baseline and FAM -> predict -> evaluate -> report,
with no data and on a CPU. Settings live in ``configs/demo.yaml``: a ``prepare`` section (PrepareOptions of
synthetic skulls), a ``sweep`` section and a ``run`` section (as for ``fam-skull sweep``)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path

import yaml

from data_prep.prepare import PrepareOptions, prepare
from fam_skull.config import ConfigError, apply, merge
from fam_skull.experiments.sweep import SweepResult, load_sweep, sweep

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"  # packaged: a wheel install runs the demo


def demo(
    config: str | Path = DEMO_CONFIG, output: str | Path = "demo_out", overrides: Sequence[str] = (), *, quiet: bool = False
) -> SweepResult:
    """Run the whole pipeline into ``output`` (``data/``, ``runs/``, ``report/report.md``); overrides are
    dotted keys over the three sections, e.g. ``prepare.synthetic=6 run.train.epochs=2``."""
    config = Path(config)
    if not config.is_file():
        raise ConfigError(f"{config}: demo config not found")
    values = merge(yaml.safe_load(config.read_text(encoding="utf-8")) or {}, list(overrides))
    output = Path(output)
    prep = values.get("prepare") or {}
    for key in ("grid", "synthetic_shape", "defects", "shift_defects"):  # YAML lists -> the options' tuples
        if prep.get(key) is not None:
            prep[key] = tuple(prep[key])
    known = [f.name for f in dataclasses.fields(PrepareOptions) if f.name not in ("output", "source", "path", "quiet")]
    for key in prep:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(
                f"unknown key prepare.{key}" + (f" (did you mean prepare.{close[0]}?)" if close else f" (valid: {', '.join(known)})")
            )
    opts = PrepareOptions(output=output / "data", source="synthetic", quiet=quiet, **prep)
    # every section is checked before the first case is prepared
    run = apply(values.get("run") or {}, {"data.manifest": str(opts.output / "manifest.json")})
    sweep_cfg, run = load_sweep(values={"sweep": {**(values.get("sweep") or {}), "output": str(output)}, "run": run})
    result = prepare(opts)
    if not result.ok:
        raise ConfigError(f"the demo could not prepare any case: {result.skipped[0].reason if result.skipped else 'no skulls'}")
    return sweep(sweep_cfg, run, quiet=quiet)
