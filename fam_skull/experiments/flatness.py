"""``fam-skull flatness``: kappa of a trained model's FAM layer over a dataset, with a confidence interval; and
the strengths at which other objectives pull on that layer as hard as a reference one (``--match``).

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
from fam_skull.fam.flatness import OBJECTIVES, Objective, relative_flatness, resolve_layer
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


@dataclass
class StrengthMatch:
    """Per objective: ``ratio`` = mean over cases of ||grad_W R|| / ||grad_W E|| at lambda = 1 on the FAM layer W,
    and ``lam`` = the lambda whose pull equals the reference's (reference lambda x reference ratio / ratio)."""

    reference: tuple[str, float]
    ratio: dict[str, float]
    lam: dict[str, float]


def match_strengths(
    run: str | Path,
    data: str | Path,
    reference: tuple[str, float],
    objectives: Sequence[str] = ("kappa", "fisher", "l2"),
    *,
    roles: Sequence[str] = ("train",),
    probes: int = 4,
    max_cases: int = 8,
    checkpoint: str = "last",
    seed: int = 0,
    quiet: bool = False,
) -> StrengthMatch:
    """Lambdas at which each objective's gradient on the FAM layer is as large, relative to the task loss's, as the
    ``reference`` (objective, lambda)'s, measured on ``max_cases`` cases at a checkpoint of a run (a baseline after
    warm-up, say): strengths matched by pull, so that arms of different objectives differ in direction only."""
    names = [reference[0], *[o for o in objectives if o != reference[0]]]
    unknown = [o for o in names if o not in OBJECTIVES]
    if unknown:
        raise ValueError(f"objectives must be among {', '.join(OBJECTIVES)}, got {unknown}")
    model, config, _, _ = load_run(run, checkpoint)
    weight = resolve_layer(model, config.fam.layer).weight
    entries = [e for role in roles for e in items(Manifest.load(data), role)][:max_cases]
    if not entries:
        raise ValueError(f"{data}: no cases with role {', '.join(roles)}")
    loss_fn, load = build_loss(config), transforms()
    generator = torch.Generator().manual_seed(seed)
    ratios: dict[str, list[float]] = {o: [] for o in names}
    for entry in progress(entries, desc="strengths", unit="case", quiet=quiet):
        item = load(entry)
        inputs, targets = item["image"][None], item[config.model.target][None]
        (task,) = torch.autograd.grad(loss_fn(model(inputs), targets), weight)
        for objective in names:
            value = relative_flatness(
                model,
                config.fam.layer,
                loss_fn,
                inputs,
                targets,
                probes=probes,
                generator=generator,
                objective=objective,  # type: ignore[arg-type]
            )
            (pull,) = torch.autograd.grad(value, weight)
            ratios[objective].append(float(pull.norm() / task.norm()))
    ratio = {o: sum(v) / len(v) for o, v in ratios.items()}
    lam = {o: reference[1] * ratio[reference[0]] / ratio[o] for o in names}
    return StrengthMatch(reference, ratio, lam)
