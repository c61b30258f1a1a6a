"""Reports of an evaluation: the paper's table (Markdown and CSV), per-case CSV, box plots, slice overlays."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.io import atomic_write_text, read_image, to_array
from data_prep.manifest import Manifest
from fam_skull.common.figures import pyplot, save_figure
from fam_skull.common.paths import PredictionFolder, slug
from fam_skull.metrics import BOUNDARY_MM, METRICS

COLUMNS = (("dsc", "DSC"), ("hd", "HD"), ("hd95", "HD95"))
QUALITY = (("dsc", "DSC"), ("bdsc", "boundary DSC"), ("hd95", "HD95"))  # what AutoImplant 2021 scored
SET_NAMES = {"eval1": "set 1", "eval2": "set 2"}
TARGET_NAMES = {"implant": "implant", "complete": "completed skull"}


def _cell(values: list[float | None], metric: str) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    digits = 4 if metric == "dsc" else 3
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{np.mean(present):.{digits}f} ± {np.std(present, ddof=1):.{digits}f}"


def paper_table(
    runs: dict[str, list[dict]],
    sets: Sequence[str],
    target: str = "implant",
    columns: Sequence[tuple[str, str]] = COLUMNS,
    subsets: bool = True,
    published: dict[str, dict] | None = None,
) -> tuple[str, str]:
    """The paper's layout: one row per method; per set DSC, DSC (100), HD, HD (100), HD95, HD95 (100)
    (other ``columns``, and without the (100) columns when ``subsets`` is false, for other tables).

    ``runs`` maps a method label to the summaries of its runs (one per seed): a cell is the mean over runs
    of the per-run means, +- the standard deviation over runs when there are several. ``published`` rows
    (``{label: {set: {metric: value}}}``, numbers from a paper) come first, in the columns over all cases.
    """
    scopes = ("all", "subset") if subsets else ("all",)
    header = ["method"]
    for s in sets:
        for _, name in columns:
            header += [f"{SET_NAMES.get(s, s)}: {name}" + (" (100)" if scope == "subset" else "") for scope in scopes]
    rows = []
    for label, values in (published or {}).items():
        row = [label]
        for s in sets:
            for metric, _ in columns:
                value = values.get(s, {}).get(metric)
                row += [_cell([value], metric) if scope == "all" else "-" for scope in scopes]
        rows.append(row)
    for label, summaries in runs.items():
        row = [label if len(summaries) == 1 else f"{label} ({len(summaries)} seeds)"]
        for s in sets:
            for metric, _ in columns:
                for scope in scopes:
                    vals = [summ["sets"][s][target].get(metric, {}).get(scope, {}).get("mean") for summ in summaries]
                    row.append(_cell(vals, metric))
        rows.append(row)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    for s in sets:
        first = next(iter(runs.values()))[0]["sets"][s]
        failed = {label: sum(summ["sets"][s]["failed"] for summ in summaries) for label, summaries in runs.items()}
        sub = first["subset"]
        notes.append(
            f"- {SET_NAMES.get(s, s)} ({s}): {first['cases']} cases"
            + (
                ("; the (100) columns use " + (f"all {sub['size']} cases (fewer than 100)" if sub["all_cases"] else f"the {sub['rule']}"))
                if subsets
                else ""
            )
            + (
                "; no failed cases"
                if not any(failed.values())
                else "; failed cases per method: " + ", ".join(f"{k} {v}" for k, v in failed.items())
            )
        )
    units = next(iter(runs.values()))[0].get("units", "mm")
    md_text = (
        "\n".join(md)
        + "\n\n"
        + f"Metrics of the {TARGET_NAMES[target]}; HD and HD95 in {units} (medpy definitions)"
        + (f"; boundary DSC: within {BOUNDARY_MM:g} {units} of the defective skull" if any(m == "bdsc" for m, _ in columns) else "")
        + ".\n"
        + "\n".join(notes)
        + "\n"
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return md_text, out.getvalue()


def defect_table(summaries: dict[str, dict], manifest: Manifest, sets: Sequence[str]) -> tuple[str, str]:
    """Implant quality per method, set and defect type: cases, DSC, boundary DSC, HD95 (means over the cases
    scored) and how many predictions were empty; a held-out type that fails shows here, not in a set's mean."""
    defect = {c["id"]: c.get("defect") or "-" for c in manifest.cases}
    header = ["method", "set", "defect type", "cases", "DSC", "boundary DSC", "HD95", "empty predictions"]
    rows = []
    for label, summary in summaries.items():
        for s in sets:
            scored = [r for r in summary["metric_per_case"] if r["set"] == s and "error" not in r]
            for kind in sorted({defect.get(r["case"], "-") for r in scored}):
                typed = [r["implant"] for r in scored if defect.get(r["case"], "-") == kind]
                cells = [_cell([float(np.mean([m[k] for m in typed if m.get(k) is not None]))], k) for k, _ in QUALITY]
                empty = sum(m.get("empty") in ("prediction", "both") for m in typed)
                rows.append([label, SET_NAMES.get(s, s), kind, str(len(typed)), *cells, str(empty)])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    units = next(iter(summaries.values())).get("units", "mm") if summaries else "mm"
    text = "\n".join(md) + f"\n\nImplant metrics per defect type (means over cases); HD95 in {units}.\n"
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    return text, out.getvalue()


def per_case_csv(summaries: dict[str, dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", "set", "case", "target", *METRICS, "empty", "error"])
    for label, summary in summaries.items():
        for r in summary["metric_per_case"]:
            if "error" in r:
                writer.writerow([label, r["set"], r["case"], "", *[""] * len(METRICS), "", r["error"]])
                continue
            for target in ("implant", "complete"):
                m = r[target]
                writer.writerow([label, r["set"], r["case"], target] + [m.get(k, "") for k in METRICS] + [m["empty"] or "", ""])
    return out.getvalue()


def box_plots(summaries: dict[str, dict], sets: Sequence[str], path: Path) -> None:
    """Implant DSC and HD95 per set and method, one horizontal box per method (the seeds of a method, labelled
    "<method>, seed N", are pooled into one box); HD95 on a log axis, so misses scored at the volume's diagonal
    stay visible without flattening the rest."""
    plt = pyplot()
    from matplotlib import ticker

    methods: dict[str, list[dict]] = {}
    for label, summ in summaries.items():
        methods.setdefault(re.sub(r", seed \d+$", "", label), []).extend(summ["metric_per_case"])
    fig, axes = plt.subplots(len(sets), 2, figsize=(14, 1.2 + (0.45 * len(methods) + 0.8) * len(sets)), squeeze=False)
    for i, s in enumerate(sets):
        for j, (metric, name) in enumerate((("dsc", "implant DSC"), ("hd95", "implant HD95 (mm, log scale)"))):
            values = [[r["implant"][metric] for r in rows if r["set"] == s and "error" not in r] for rows in methods.values()]
            data = [[v for v in d if np.isfinite(v)] for d in values]  # an empty mask scored inf (--empty inf) has no place
            ax = axes[i, j]
            ax.boxplot([d if d else [np.nan] for d in data], vert=False, widths=0.6, flierprops={"markersize": 3, "alpha": 0.5})
            ax.set_yticks(range(1, len(methods) + 1), list(methods), fontsize=9)
            ax.invert_yaxis()  # the first method on top, as in the tables
            infinite = sum(len(d) for d in values) - sum(len(d) for d in data)
            if infinite:
                name += f"; {infinite} infinite not shown"
            if metric == "hd95" and any(v > 0 for d in data for v in d):  # log needs a positive value
                ax.set_xscale("log")
                # ticks at 1, 2, 5 x 10^k written as plain numbers: the default labels of a log axis spanning
                # under two decades are minor labels in 10^k notation that overlap
                ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            else:
                ax.set_xlim(0, 1)
            ax.set_title(f"{SET_NAMES.get(s, s)}: {name}", fontsize=10)
            ax.set_xlabel(name)
            ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def overlays(summary: dict, manifest: Manifest, path: Path) -> None:
    """Axial and coronal slices through the reference implant's centre for the best, median and worst cases
    (implant DSC): defective skull grey, reference implant green, prediction outlined red; millimetre aspect."""
    plt = pyplot()

    ok = sorted((r for r in summary["metric_per_case"] if "error" not in r), key=lambda r: r["implant"]["dsc"])
    if not ok:
        return
    picks = {"best": ok[-1], "median": ok[len(ok) // 2], "worst": ok[0]}
    cases = {c["id"]: c for c in manifest.cases}
    folder = Path(summary["predictions"])
    index = PredictionFolder(folder).read_index()["cases"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    for column, (name, r) in enumerate(picks.items()):
        case = cases[r["case"]]
        reference = read_image(manifest.file(case, "original", "implant"))
        spacing = reference.GetSpacing()
        gt = to_array(reference) != 0
        defective = to_array(read_image(manifest.file(case, "original", "defective"))) != 0
        pred = to_array(read_image(folder / index[r["case"]]["files"]["implant"])) != 0
        centre = np.argwhere(gt).mean(0).astype(int) if gt.any() else np.array(gt.shape) // 2
        for row, (view, axis, (horizontal, vertical)) in enumerate((("axial", 2, (0, 1)), ("coronal", 1, (0, 2)))):
            ax = axes[row, column]
            cut = [np.take(m, centre[axis], axis=axis) for m in (defective, gt, pred)]
            rgb = np.zeros(cut[0].shape + (3,))
            rgb[cut[0]] = 0.6
            rgb[cut[1]] = (0.1, 0.8, 0.2)
            ax.imshow(np.transpose(rgb, (1, 0, 2)), origin="lower", aspect=spacing[vertical] / spacing[horizontal])
            if cut[2].any():
                ax.contour(cut[2].T.astype(float), levels=[0.5], colors="red", linewidths=1)
            title = f"{name}: {r['case']} (implant DSC {r['implant']['dsc']:.3f})\n" if row == 0 else ""
            ax.set_title(f"{title}{view} slice {centre[axis]}", fontsize=9)
            ax.axis("off")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(color=(0.6, 0.6, 0.6), label="defective skull"),
            Patch(color=(0.1, 0.8, 0.2), label="reference implant"),
            Line2D([], [], color="red", label="predicted implant (outline)"),
        ],
        loc="lower center",
        ncol=3,
        frameon=False,
    )
    fig.suptitle(summary["method"])
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, path)


def write_reports(summaries: dict[str, dict], manifest: Manifest, output: Path, sets: Sequence[str]) -> None:
    """table(.md/.csv) for implants, table_quality and table_types (per defect type) for implant quality,
    table_complete(.md/.csv) for completed skulls, per_case.csv,
    boxplots.png, overlays_<method>.png and report.md in ``output``."""

    output.mkdir(parents=True, exist_ok=True)
    runs = {label: [s] for label, s in summaries.items()}
    for target, name in (("implant", "table"), ("complete", "table_complete")):
        md, text = paper_table(runs, sets, target)
        atomic_write_text(output / f"{name}.md", md)
        atomic_write_text(output / f"{name}.csv", text)
    md, text = paper_table(runs, sets, "implant", QUALITY, subsets=False)
    atomic_write_text(output / "table_quality.md", md)
    atomic_write_text(output / "table_quality.csv", text)
    md, text = defect_table(summaries, manifest, sets)
    atomic_write_text(output / "table_types.md", md)
    atomic_write_text(output / "table_types.csv", text)
    atomic_write_text(output / "per_case.csv", per_case_csv(summaries))
    box_plots(summaries, sets, output / "boxplots.png")
    for label, summary in summaries.items():
        overlays(summary, manifest, output / f"overlays_{slug(label)}.png")
    lines = [
        "# Evaluation",
        "",
        "## Implants",
        "",
        (output / "table.md").read_text(encoding="utf-8"),
        "## Implant quality",
        "",
        (output / "table_quality.md").read_text(encoding="utf-8"),
        "## By defect type",
        "",
        (output / "table_types.md").read_text(encoding="utf-8"),
        "## Completed skulls",
        "",
        (output / "table_complete.md").read_text(encoding="utf-8"),
        "## Distributions",
        "",
        "![box plots](boxplots.png)",
        "",
    ]
    for label in summaries:
        lines += [f"### {label}", "", f"![overlays](overlays_{slug(label)}.png)", ""]
    atomic_write_text(output / "report.md", "\n".join(lines))
