"""``fam-skull sweep``: several training arms over seeds; each run trained, predicted and evaluated; one table
in the paper's layout with mean +- std over seeds. Reruns skip finished runs, resume unfinished ones with the sweep's
config (a longer ``train.epochs`` extends them), refuse a run trained with other settings (naming the key), and
reuse finished predictions and per-case metrics.

Config: a ``sweep`` section (below) and a ``run`` section, a training config shared by every run. The arms are
either listed (``arms``: a name and the config keys it sets, e.g. ``{name: "implant target", set:
{model.target: implant}}``) or, when ``arms`` is empty: baseline, FAM at each of ``lams`` (with the run section's objective)
and optionally SAM. ``train.seed`` and ``output`` are set per run. With a ``refine`` mapping (config keys of
the refinement run, e.g. ``{refine.patch: [48, 48, 48], train.epochs: 20}``), every arm's run is followed by
a refinement run on top of it (``stage: refine``; the arm's own keys, FAM included, act on the coarse stage, except
its ``refine.*`` keys, which act on its refinement run),
and the table shows each arm twice: its coarse stage and "+ refinement". ``tables`` names the targets with a paper
table (implant, complete), ``published_rows`` adds a paper's own rows to the first, and ``voxel_distances`` repeats
the tables with HD and HD95 in voxels (the unit of a paper that ran medpy without a spacing).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_prep.folder import claim
from data_prep.io import atomic_write_text
from data_prep.manifest import Manifest
from fam_skull.common.checkpoint import load_checkpoint
from fam_skull.common.paths import RunFolder, slug
from fam_skull.config import Config, ConfigError, apply, build_section, load_config, merge, method_label
from fam_skull.evaluate.evaluation import TARGETS, EvaluateOptions, evaluate
from fam_skull.evaluate.report import QUALITY, TARGET_NAMES, paper_table
from fam_skull.experiments.study import StudyRun, write_study
from fam_skull.fam.regularizer import DEFAULT_LAMBDA
from fam_skull.fam.sam import DEFAULT_RHO
from fam_skull.predict.options import MIN_COMPONENT_MM3, RIM_MM, STRAY_MM
from fam_skull.predict.predictor import PredictOptions, predict
from fam_skull.train.resume import resolve
from fam_skull.train.trainer import train

log = logging.getLogger("fam_skull.sweep")


@dataclass
class SweepConfig:
    output: str = "runs/sweep"
    arms: list[dict] = field(default_factory=list)  # [{name: ..., set: {dotted.key: value}}]; empty: the paper's arms
    refine: dict = field(default_factory=dict)  # non-empty: each run is followed by a refinement run with these keys set
    study: bool = False  # also compare every arm with the first (paired over seeds and cases; fam_skull.experiments.study)
    study_flatness_cases: int = 20  # cases per evaluation set for the study's kappa and kappa_F
    # around the default objective's lambda; the paper's lambdas belong to its objective (configs/sweep_paper.yaml)
    lams: list[float] = field(default_factory=lambda: [DEFAULT_LAMBDA / 10, DEFAULT_LAMBDA, DEFAULT_LAMBDA * 10])
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: bool = True
    sam: bool = False
    sam_rho: float = DEFAULT_RHO
    checkpoint: str = "best"
    min_component_mm3: float = MIN_COMPONENT_MM3
    rim_mm: float | None = RIM_MM  # predict's rim filter; None keeps floating pieces (a setup scored without post-processing)
    stray_mm: float | None = STRAY_MM  # predict's stray filter; None keeps small pieces far from the implant
    sets: list[str] = field(default_factory=lambda: ["eval1", "eval2"])
    subset: int = 100
    tables: list[str] = field(default_factory=lambda: ["implant"])  # targets of the paper tables: implant, complete
    voxel_distances: bool = False  # also the tables with HD and HD95 in voxels of each case's grid (report_voxels/)
    published_rows: dict = field(default_factory=dict)  # {label: {set: {metric: value}}}: a paper's rows, first table


def load_sweep(path: str | Path | None = None, overrides: Sequence[str] = (), values: dict | None = None) -> tuple[SweepConfig, dict]:
    """The sweep section (validated) and the run section (validated once per run)."""
    if values is None:
        if path is None or not Path(path).is_file():
            raise ConfigError(f"{path}: sweep config not found")
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    unknown = set(values) - {"sweep", "run"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; a sweep config has 'sweep' and 'run'")
    merged = merge({"sweep": values.get("sweep") or {}, "run": values.get("run") or {}}, list(overrides))
    sweep = build_section(SweepConfig, merged["sweep"], "sweep.")
    if not sweep.tables or set(sweep.tables) - set(TARGETS):
        raise ConfigError(f"sweep.tables: one or more of {', '.join(TARGETS)}, got {sweep.tables}")
    if any(not isinstance(v, dict) or not all(isinstance(m, dict) for m in v.values()) for v in sweep.published_rows.values()):
        raise ConfigError(f"sweep.published_rows: expected {{label: {{set: {{metric: value}}}}}}, got {sweep.published_rows}")
    if any(lam < 0 for lam in sweep.lams):
        raise ConfigError(f"sweep.lams: every lambda must be >= 0, got {sweep.lams}")
    arms = _arms(sweep)
    for arm in arms:  # fail early on a bad run section or arm
        load_config(base=apply(merged["run"], arm[2]))
    if sweep.study and len(arms) < 2:
        raise ConfigError(
            f"sweep.study: compares every arm with the first, so it needs at least two arms, got {len(arms)}; add arms or set study: false"
        )
    if sweep.refine:
        for arm in arms:
            load_config(base=apply(merged["run"], _refine_settings(sweep, arm[2], "coarse_run")))
    return sweep, merged["run"]


def _refine_settings(sweep: SweepConfig, arm: dict, coarse_run: str) -> dict:
    """The refinement run's keys: the sweep's ``refine`` mapping, then the arm's own ``refine.*`` keys."""
    own = {k: v for k, v in arm.items() if k.startswith("refine.")}
    return {"method": "baseline", **sweep.refine, **own, "stage": "refine", "refine.coarse_run": coarse_run}


def _arms(sweep: SweepConfig) -> list[tuple[str, str | None, dict]]:
    """(folder name, table label or None for the method's own, config keys) of each arm."""
    out: list[tuple[str, str | None, dict]]
    if not sweep.arms:
        out = [("baseline", None, {"method": "baseline"})] if sweep.baseline else []
        out += [(f"fam_{lam:g}", None, {"method": "fam", "fam.lam": lam}) for lam in sweep.lams]
        if sweep.sam:
            out.append((f"sam_{sweep.sam_rho:g}", None, {"method": "sam", "sam.rho": sweep.sam_rho}))
        return out
    out = []
    for i, arm in enumerate(sweep.arms):
        if set(arm) - {"name", "set"} or not isinstance(arm.get("name"), str) or not isinstance(arm.get("set", {}), dict):
            raise ConfigError(f"sweep.arms[{i}]: expected {{name: TEXT, set: {{dotted.key: value}}}}, got {arm!r}")
        out.append((slug(arm["name"]), arm["name"], arm.get("set", {})))
    names = [name for name, _, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep.arms: two arms share a name ({names})")
    return out


def _runs(sweep: SweepConfig, run: dict) -> list[tuple[str, str, int, Config]]:
    """(folder name, label, seed, config) of every run."""
    out = []
    for seed in sweep.seeds:
        for name, label, settings in _arms(sweep):
            folder = f"{name}_s{seed}"
            cfg = load_config(base=apply(run, {**settings, "train.seed": seed, "output": str(Path(sweep.output) / "runs" / folder)}))
            out.append((folder, label or method_label(cfg), seed, cfg))
            if sweep.refine:
                refined = _refine_settings(sweep, settings, cfg.output)
                folder = f"{name}_refined_s{seed}"
                cfg = load_config(base=apply(run, {**refined, "train.seed": seed, "output": str(Path(sweep.output) / "runs" / folder)}))
                out.append((folder, f"{out[-1][1]} + refinement", seed, cfg))
    return out


def _train_or_resume(cfg, run_dir: Path, quiet: bool) -> None:
    last = RunFolder(run_dir).checkpoint("last")
    if not last.is_file():
        train(cfg, quiet=quiet)
        return
    resolve(cfg, resume=run_dir)  # a run trained with other settings than the sweep's is refused, finished or not
    done = load_checkpoint(last)["epoch"]
    if done >= cfg.train.epochs:
        log.info("%s: finished (%d epochs), skipped", run_dir.name, done)
        return
    log.info("%s: resuming after epoch %d", run_dir.name, done)
    train(cfg, resume=run_dir, quiet=quiet)  # the sweep's config: its resumable keys (epochs, lr, ...) apply


@dataclass
class SweepResult:
    output: Path
    table: str
    runs: dict


def sweep(config: SweepConfig, run: dict, *, quiet: bool = False) -> SweepResult:
    """Train, predict and evaluate every run; write ``<output>/report`` with the seed-averaged table.

    Raises:
        FolderError: the output folder is a file, not writable, or in use by another process.
    """
    with claim(config.output, "sweep"):
        return _sweep(config, run, quiet)


def _sweep(config: SweepConfig, run: dict, quiet: bool) -> SweepResult:
    out = Path(config.output)
    manifest = Manifest.load(load_config(base={**run, "method": "baseline"}).data.manifest)
    labels, folders, coarse = {}, {}, []
    for name, label, seed, cfg in _runs(config, run):
        run_dir = Path(cfg.output)
        if cfg.stage == "coarse":
            coarse.append(name)
        _train_or_resume(cfg, run_dir, quiet)
        predict(
            PredictOptions(
                run=run_dir,
                output=RunFolder(run_dir).predictions,
                manifest=manifest.path,
                roles=tuple(config.sets),
                checkpoint=config.checkpoint,
                min_component_mm3=config.min_component_mm3,
                rim_mm=config.rim_mm,
                stray_mm=config.stray_mm,
                quiet=quiet,
            )
        )
        labels[name] = (label, seed)
        folders[name] = RunFolder(run_dir).predictions
    multi_seed = len(config.seeds) > 1
    names = {name: (f"{label}, seed {seed}" if multi_seed else label) for name, (label, seed) in labels.items()}
    reports = {"mm": out / "report"} | ({"voxels": out / "report_voxels"} if config.voxel_distances else {})
    tables: list[str] = []
    in_mm: dict = {}
    for units, folder in reports.items():
        result = evaluate(
            EvaluateOptions(
                [f"{names[n]}={folders[n]}" for n in names],
                manifest.path,
                folder,
                tuple(config.sets),
                config.subset,
                units=units,
                quiet=quiet,
            )
        )
        grouped: dict[str, list] = {}
        for name, (label, _) in labels.items():
            grouped.setdefault(label, []).append(result.summaries[names[name]])
        for i, target in enumerate(config.tables):
            md, text = paper_table(grouped, config.sets, target, published=config.published_rows if i == 0 else None)
            stem = "sweep_table" + ("" if i == 0 else f"_{target}") + ("" if units == "mm" else "_voxels")
            atomic_write_text(out / "report" / f"{stem}.md", md)
            atomic_write_text(out / "report" / f"{stem}.csv", text)
            units_note = "" if units == "mm" else ", HD and HD95 in voxels"
            tables += [f"## Paper table ({TARGET_NAMES[target]}s{units_note}, mean ± std over seeds)", "", md]
        if units == "mm":
            in_mm = result.summaries
            quality, _ = paper_table(grouped, config.sets, "implant", QUALITY, subsets=False)
            tables += ["## Implant quality (mean ± std over seeds)", "", quality]
    curves = []
    for name in names:
        src = RunFolder(out / "runs" / name).curves
        if src.is_file():
            shutil.copyfile(src, out / "report" / f"curves_{slug(name)}.png")
            curves += [f"### {names[name]}", "", f"![training curves](curves_{slug(name)}.png)", ""]
    report = out / "report" / "report.md"
    head = ["# fam-skull report", "", f"Runs: {len(names)}; seeds: {config.seeds}.", ""]
    if multi_seed or config.published_rows or config.voxel_distances:  # else the evaluation's own tables below are these
        head += tables
    if config.study:
        runs = [StudyRun(labels[n][0], labels[n][1], out / "runs" / n, in_mm[names[n]]) for n in coarse]
        study = write_study(
            runs, runs[0].arm, manifest.path, config.sets, out / "report", flatness_cases=config.study_flatness_cases, targets=config.tables
        )
        head += [study, ""]
    head += ["## Training curves", "", *curves]
    atomic_write_text(report, "\n".join(head) + "\n" + report.read_text(encoding="utf-8"))
    table = (out / "report" / "sweep_table.md").read_text(encoding="utf-8")
    return SweepResult(out, table, {names[n]: str(out / "runs" / n) for n in names})
