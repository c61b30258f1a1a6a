"""Does a regularizer help? A finished multi-seed sweep read as a study against its reference arm (the first).

For every other arm and evaluation set: the paired difference to the reference in DSC and HD95 (of the implant,
and of the completed skull when asked), as a
mean over seeds with a 95% t-interval (seeds are the independent replicates), and a paired per-case test
(Wilcoxon signed-rank on each case's score averaged over seeds); kappa and kappa_F of every arm on the
evaluation sets (``fam-skull flatness``: does the regularizer lower them off the training set?); validation
curves and the logged regularizer per arm; the step-time ratio to the reference.

Writes ``study.md``, ``study_differences.csv``, ``study_flatness.csv``, ``study_forest.png`` and
``study_curves.png`` into the sweep's report folder.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from data_prep.io import atomic_write_text, file_stamp
from fam_skull.common.figures import pyplot, save_figure
from fam_skull.common.paths import RunFolder
from fam_skull.common.stats import mean_interval
from fam_skull.evaluate.report import SET_NAMES, TARGET_NAMES
from fam_skull.experiments.flatness import measure_flatness
from fam_skull.fam.regularizer import OBJECTIVE_COLUMNS

log = logging.getLogger("fam_skull.study")
METRICS = (("dsc", "DSC", True), ("hd95", "HD95", False))  # (key, name, higher is better)


@dataclass
class StudyRun:
    """One trained run of the study: its arm's label, seed, folder and evaluation summary."""

    arm: str
    seed: int
    folder: Path
    summary: dict


def _per_case(summary: dict, set_name: str, target: str, metric: str) -> dict[str, float]:
    return {r["case"]: r[target][metric] for r in summary["metric_per_case"] if r["set"] == set_name and "error" not in r}


def paired_differences(runs: list[StudyRun], reference: str, sets: Sequence[str], targets: Sequence[str] = ("implant",)) -> list[dict]:
    """Arm minus reference, per set, target and metric: mean over seeds with a 95% t-interval, and the per-case
    test."""
    by_arm: dict[str, dict[int, StudyRun]] = {}
    for r in runs:
        by_arm.setdefault(r.arm, {})[r.seed] = r
    rows = []
    for arm, seeds in by_arm.items():
        if arm == reference:
            continue
        common = sorted(set(seeds) & set(by_arm[reference]))
        for s, target, (metric, _, _) in ((s, t, m) for s in sets for t in targets for m in METRICS):
            diffs = [
                seeds[k].summary["sets"][s][target][metric]["all"]["mean"]
                - by_arm[reference][k].summary["sets"][s][target][metric]["all"]["mean"]
                for k in common
            ]
            mean, low, high = mean_interval(diffs)
            arm_cases = [_per_case(seeds[k].summary, s, target, metric) for k in common]
            ref_cases = [_per_case(by_arm[reference][k].summary, s, target, metric) for k in common]
            cases = sorted(set.intersection(*(set(c) for c in arm_cases + ref_cases))) if common else []
            a = np.array([np.mean([c[i] for c in arm_cases]) for i in cases])
            b = np.array([np.mean([c[i] for c in ref_cases]) for i in cases])
            p = float(stats.wilcoxon(a, b).pvalue) if len(cases) > 1 and np.any(a != b) else float("nan")
            rows.append(
                {
                    "arm": arm,
                    "set": s,
                    "target": target,
                    "metric": metric,
                    "seeds": len(diffs),
                    "difference": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "cases": len(cases),
                    "wilcoxon_p": p,
                    "cases_better": float(np.mean(a > b) if metric == "dsc" else np.mean(a < b)) if len(cases) else float("nan"),
                }
            )
    return rows


def _cache_key(folder: Path, max_cases: int, probes: int) -> dict:
    """What a cached flatness value was measured on: the weights (``best.pt``, else ``last.pt``, as measure_flatness
    reads them) by path, size and modification time, and the number of cases and probes."""
    run = RunFolder(folder)
    checkpoint = run.checkpoint("best") if run.checkpoint("best").is_file() else run.checkpoint("last")
    return {"checkpoint": file_stamp(checkpoint), "cases": max_cases, "probes": probes}


def _cached(path: Path, key: dict) -> float | None:
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or damaged: measured again
        return None
    return float(cached["kappa"]) if isinstance(cached, dict) and cached.get("key") == key else None


def flatness_on_sets(runs: list[StudyRun], manifest: Path, sets: Sequence[str], max_cases: int, probes: int) -> list[dict]:
    """kappa and kappa_F of each run's FAM layer (the bottleneck) on each evaluation set, cached in the run folder
    and measured again when the run's weights (or the number of cases or probes) changed."""
    rows = []
    for r in runs:
        key = _cache_key(r.folder, max_cases, probes)
        for s in sets:
            for objective in ("kappa", "fisher"):
                path = r.folder / f"flatness_{s}_{objective}.json"
                value = _cached(path, key)
                if value is None:
                    report = measure_flatness(
                        r.folder, manifest, roles=(s,), probes=probes, max_cases=max_cases, quiet=True, objective=objective
                    )
                    atomic_write_text(path, json.dumps({"key": key, **report.to_dict()}, indent=1))
                    value = report.kappa
                rows.append({"arm": r.arm, "seed": r.seed, "set": s, "objective": objective, "value": value})
    return rows


def _history(folder: Path) -> list[dict]:
    with open(RunFolder(folder).metrics) as f:
        return list(csv.DictReader(f))


def step_time_ratios(runs: list[StudyRun], reference: str) -> dict[str, float]:
    """Mean step time over the second half of training (FAM warm-ups are over) of each arm's fastest seed (other
    work on the machine only slows a run down), relative to the reference's."""
    times: dict[str, list[float]] = {}
    for r in runs:
        rows = _history(r.folder)
        times.setdefault(r.arm, []).append(float(np.mean([float(h["step_time"]) for h in rows[len(rows) // 2 :]])))
    base = min(times[reference])
    return {arm: float(min(t) / base) for arm, t in times.items()}


def _forest(rows: list[dict], sets, path: Path) -> None:
    plt = pyplot()

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    panels = list(dict.fromkeys((r["target"], r["metric"]) for r in rows))
    higher = {metric: up for metric, _, up in METRICS}
    names = {metric: name for metric, name, _ in METRICS}
    fig, axes = plt.subplots(len(panels), len(sets), figsize=(5.5 * len(sets), 0.45 * len(arms) * len(panels) + 2.5), squeeze=False)
    for i, (target, metric) in enumerate(panels):
        for j, s in enumerate(sets):
            ax = axes[i][j]
            sub = {r["arm"]: r for r in rows if r["set"] == s and r["target"] == target and r["metric"] == metric}
            ys = np.arange(len(arms))[::-1]
            for y, arm in zip(ys, arms):
                r = sub[arm]
                colour = "tab:green" if (r["difference"] > 0) == higher[metric] else "tab:red"
                if np.isfinite(r["ci_low"]):
                    ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colour, linewidth=2)
                ax.plot(r["difference"], y, "o", color=colour)
            ax.axvline(0, color="black", linewidth=1)
            ax.set_yticks(ys, arms)
            ax.set_title(f"{SET_NAMES.get(s, s)} ({s}): {TARGET_NAMES[target]} {names[metric]}")
            ax.set_xlabel(f"arm minus reference ({'higher' if higher[metric] else 'lower'} is better)", fontsize=9)
    fig.suptitle("Paired difference to the reference arm: mean over seeds, 95% interval (green: mean better, red: mean worse)")
    fig.tight_layout()
    save_figure(fig, path)


def _curves(runs: list[StudyRun], path: Path) -> None:
    """Training curves per arm; the validation panel only where some run validated more than once (a single point
    per arm says nothing a curve would, and the tables hold it)."""
    plt = pyplot()

    arms = list(dict.fromkeys(r.arm for r in runs))
    histories = {arm: [_history(r.folder) for r in runs if r.arm == arm] for arm in arms}
    validations = max(sum(1 for h in rows if h.get("val_implant_dsc")) for hs in histories.values() for rows in hs)
    panels: list[tuple[str | None, str, str]] = [("task_loss", "task loss on training batches (mean over seeds)", "loss")]
    if validations > 1:
        panels.append(("val_implant_dsc", "validation implant DSC (mean over seeds)", "DSC"))
    panels.append((None, "regularizer on training batches (each arm's own objective)", "value (symlog)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7.3 * len(panels), 4.8))
    colours = plt.get_cmap("tab10")
    for k, arm in enumerate(arms):
        for (key, _, _), ax in zip(panels, axes):
            points: dict[int, list[float]] = {}
            for rows in histories[arm]:
                column = key or next((c for c in OBJECTIVE_COLUMNS.values() if rows and c in rows[0]), None)
                for h in rows:
                    if column and h.get(column):
                        points.setdefault(int(h["epoch"]), []).append(float(h[column]))
            if points:
                epochs = sorted(points)
                ax.plot(
                    epochs,
                    [np.mean(points[e]) for e in epochs],
                    marker="o" if key == "val_implant_dsc" else None,
                    markersize=3,
                    color=colours(k % 10),
                    linestyle="-" if k < 10 else "--",
                    label=arm,
                )
    for (_, title, ylabel), ax in zip(panels, axes):
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    axes[-1].set_yscale("symlog", linthresh=1e-3)
    axes[0].legend(fontsize=8, loc="upper right")
    if axes[-1].get_lines():
        axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.{digits}f}"


def write_study(
    runs: list[StudyRun],
    reference: str,
    manifest: Path,
    sets: Sequence[str],
    output: Path,
    *,
    flatness_cases: int = 20,
    flatness_probes: int = 1,
    targets: Sequence[str] = ("implant",),
) -> str:
    """Write the study's tables and figures into ``output``; returns the Markdown.

    Raises:
        ValueError: fewer than two arms (there is nothing to compare the reference with).
    """
    arms = sorted({r.arm for r in runs})
    if len(arms) < 2 or reference not in arms:
        raise ValueError(f"a study compares arms with the reference {reference!r}; got the arm(s) {arms}")
    output.mkdir(parents=True, exist_ok=True)
    diffs = paired_differences(runs, reference, sets, targets)
    flat = flatness_on_sets(runs, manifest, sets, flatness_cases, flatness_probes)
    ratios = step_time_ratios(runs, reference)
    for name, rows in (("study_differences.csv", diffs), ("study_flatness.csv", flat)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(output / name, buf.getvalue())
    if diffs:
        _forest(diffs, sets, output / "study_forest.png")
    _curves(runs, output / "study_curves.png")
    seeds = sorted({r.seed for r in runs})
    lines = [
        f"## Study against {reference!r} ({len(seeds)} seeds: {seeds})",
        "",
        "Paired differences (arm minus reference), mean over seeds with a 95% t-interval over seeds; p: Wilcoxon "
        "signed-rank test over cases (each case's score averaged over seeds); 'cases better': share of cases where "
        "the arm beats the reference.",
        "",
        "| arm | set | metric | difference | 95% interval | cases | p (per case) | cases better |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in diffs:
        digits = 4 if r["metric"] == "dsc" else 3
        interval = "n/a" if not np.isfinite(r["ci_low"]) else f"[{_fmt(r['ci_low'], digits)}, {_fmt(r['ci_high'], digits)}]"
        p = "n/a" if not np.isfinite(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.3g}"
        metric = f"{TARGET_NAMES[r['target']]} {r['metric']}"
        lines.append(
            f"| {r['arm']} | {r['set']} | {metric} | {_fmt(r['difference'], digits)} | {interval} | {r['cases']} | {p} | "
            f"{r['cases_better']:.0%} |"
        )
    lines += [
        "",
        "![paired differences](study_forest.png)",
        "",
        "### Flatness of the bottleneck off the training set",
        "",
        f"kappa (Hessian) and kappa_F (Gauss-Newton) of each arm's bottleneck on the first {flatness_cases} cases of each "
        "evaluation set, mean over seeds (`fam-skull flatness`); kappa is not scaled by (2m)^-1.",
        "",
        "| arm | " + " | ".join(f"{s}: kappa | {s}: kappa_F" for s in sets) + " | step time x reference |",
        "|---|" + "---|---|" * len(sets) + "---|",
    ]
    for arm in dict.fromkeys(r.arm for r in runs):
        cells = []
        for s in sets:
            for objective in ("kappa", "fisher"):
                values = [f["value"] for f in flat if f["arm"] == arm and f["set"] == s and f["objective"] == objective]
                cells.append(f"{np.mean(values):.4g}")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {ratios[arm]:.2f}x |")
    lines += ["", "![curves](study_curves.png)", ""]
    text = "\n".join(lines)
    atomic_write_text(output / "study.md", text)
    return text
