"""``fam-skull flatness``: kappa of a trained model's FAM layer over a dataset, with a confidence interval.

The task loss of a dataset is the mean of per-case losses, and kappa is linear in the Hessian, so the
dataset's kappa is the mean of per-case kappas; each case contributes an unbiased Hutchinson estimate and
the interval is mean +- t(0.975, n - 1) standard errors over cases (probe noise included).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from data_prep.io import atomic_write_text
from data_prep.manifest import Manifest
from data_prep.progress import progress
from fam_skull.common.stats import mean_interval
from fam_skull.config import method_label
from fam_skull.fam.flatness import Objective, relative_flatness
from fam_skull.networks.trained import load_run
from fam_skull.train.data import items, transforms
from fam_skull.train.loss import build_loss


@dataclass
class FlatnessReport:
    method: str
    layer: str
    objective: str
    kappa: float
    ci95: tuple[float, float]
    per_case: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "layer": self.layer,
            "objective": self.objective,
            "kappa": self.kappa,
            "ci95": list(self.ci95),
            "n": len(self.per_case),
            "per_case": self.per_case,
        }


def measure_flatness(
    run: str | Path,
    data: str | Path,
    *,
    roles: Sequence[str] = ("train",),
    probes: int = 4,
    max_cases: int | None = None,
    checkpoint: str = "best",
    seed: int = 0,
    output: str | Path | None = None,
    quiet: bool = False,
    objective: Objective = "kappa",
) -> FlatnessReport:
    """kappa (not scaled by (2m)^-1; ``objective="fisher"``: kappa_F of the Gauss-Newton matrix) of the run's FAM
    layer (``fam.layer``, default the bottleneck) over the ``roles`` cases of a manifest, one case per batch,
    ``probes`` Hutchinson probes per case."""
    if objective not in ("kappa", "fisher"):
        raise ValueError(f"objective: kappa or fisher (the flatness measures), got {objective!r}")
    model, config, _, _ = load_run(run, checkpoint)
    if config.stage != "coarse":
        raise ValueError(f"{run}: a refinement run; measure the flatness of its coarse run ({config.refine.coarse_run})")
    manifest = Manifest.load(data)
    entries = [e for role in roles for e in items(manifest, role)][: max_cases or None]
    if not entries:
        raise ValueError(f"{manifest.path}: no cases with role {', '.join(roles)}")
    loss_fn = build_loss(config)
    generator = torch.Generator().manual_seed(seed)
    per_case = {}
    load = transforms()
    for entry in progress(entries, desc="flatness", unit="case", quiet=quiet):
        item = load(entry)
        kappa = relative_flatness(
            model,
            config.fam.layer,
            loss_fn,
            item["image"][None],
            item[config.model.target][None],
            probes=probes,
            generator=generator,
            objective=objective,
        )
        per_case[item["id"]] = float(kappa.detach())
    mean, low, high = mean_interval(list(per_case.values()))
    report = FlatnessReport(method_label(config), config.fam.layer, objective, mean, (low, high), per_case)
    if output is not None:
        atomic_write_text(output, json.dumps(report.to_dict(), indent=1))
    return report
