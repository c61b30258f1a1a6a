"""``fam-skull evaluate``: DSC/HD/HD95/ASSD (and boundary DSC of implants) per case, set and method.

For every method (a predictions folder) and evaluation set: per-case results in
``<output>/<method>/cases/<id>.json`` (written as each case finishes, reused by reruns), ``per_case.csv``,
and ``summary.json`` shaped like nnU-Net's (``metric_per_case`` plus aggregates); then the paper's table,
box plots and slice overlays (:mod:`fam_skull.evaluate.report`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.folder import claim
from data_prep.io import Geometry, VolumeError, atomic_write_text, file_stamp, read_image, read_json, to_array
from data_prep.manifest import Manifest
from data_prep.progress import run_jobs
from fam_skull.common.paths import PredictionFolder, slug
from fam_skull.evaluate.options import EvaluateOptions
from fam_skull.evaluate.report import write_reports
from fam_skull.metrics import METRICS, compute_metrics

log = logging.getLogger("fam_skull.evaluate")
TARGETS = ("implant", "complete")


def _methods(predictions: list[str]) -> list[tuple[str, Path, dict]]:
    out = []
    for item in predictions:
        label, _, name = item.rpartition("=") if "=" in item else ("", "", item)
        folder = Path(name)
        index = PredictionFolder(folder).read_index()
        out.append((label or index["method"], folder, index))
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two prediction folders share a method label ({labels}); name them as label=folder")
    return out


def _read_binary(path: Path, what: str) -> tuple[np.ndarray, Geometry]:
    image = read_image(path)
    array = to_array(image)
    values = np.unique(array)
    if not set(values.tolist()) <= {0, 1}:
        raise VolumeError(f"{path}: {what} has non-binary values {values[:6].tolist()}; write 0/1 masks")
    return array.astype(bool), Geometry.of(image)


def evaluate_case(pred_files: dict, gt_files: dict, empty: str = "diagonal", units: str = "mm") -> dict:
    """Metrics of one case's completed skull and implant against the ground truth in the original space
    (distances in mm, or in voxels of that space with ``units="voxels"``).

    Raises:
        VolumeError: missing or unreadable file, non-binary values, or geometry differing from the reference.
    """
    out = {}
    absent = [k for k in ("defective", *TARGETS) if k not in gt_files]
    if absent:
        raise VolumeError(f"the manifest names no original {', '.join(absent)} volume for this case; prepare it again")
    defective, _ = _read_binary(gt_files["defective"], "the defective skull")
    for target in TARGETS:
        gt, geometry = _read_binary(gt_files[target], f"the reference {target}")
        if target not in pred_files:
            raise VolumeError(f"no predicted {target}; rerun 'fam-skull predict'")
        pred, pred_geometry = _read_binary(pred_files[target], f"the predicted {target}")
        mismatch = pred_geometry.mismatch(geometry)
        if mismatch:
            raise VolumeError(f"{pred_files[target]}: {mismatch}, the reference's; predictions must be written in the original geometry")
        spacing = geometry.spacing if units == "mm" else None
        m = compute_metrics(pred, gt, spacing, defective=defective if target == "implant" else None, empty=empty)
        out[target] = m
    return out


def _key(pred_files: dict, gt_files: dict, empty: str, units: str) -> dict:
    """What a case's scores depend on: every input file (path, size, modification time), the empty policy and the
    distance units; a cached result is reused only when all of it is unchanged."""

    def stamp(files):
        return {name: file_stamp(p) for name, p in sorted(files.items())}

    key = {"prediction": stamp(pred_files), "reference": stamp(gt_files), "empty": empty}
    return key if units == "mm" else {**key, "units": units}  # the default unnamed: mm results keep their keys


def _cached(path: Path, key: dict) -> dict | None:
    try:
        previous = read_json(path)
    except ValueError:  # a damaged cache entry is recomputed
        return None
    return previous if isinstance(previous, dict) and previous.get("key") == key else None


def _job(args) -> tuple[str, str, dict]:
    method_dir, case_id, role, pred_files, gt_files, empty, units = args
    try:
        result = {"case": case_id, "set": role, **evaluate_case(pred_files, gt_files, empty, units)}
    except (VolumeError, ValueError, OSError) as e:
        result = {"case": case_id, "set": role, "error": str(e)}
    result["prediction_files"] = {k: str(v) for k, v in pred_files.items()}  # as nnU-Net's summary names them
    result["reference_files"] = {k: str(v) for k, v in gt_files.items()}
    result["key"] = _key(pred_files, gt_files, empty, units)
    atomic_write_text(Path(method_dir) / "cases" / f"{case_id}.json", json.dumps(result, indent=1))
    return method_dir, case_id, result


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    if len(a) == 0:
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "median": float(np.median(a)), "n": int(len(a))}


def aggregate(results: list[dict], subset: int) -> dict:
    """Per target and metric: mean/std/median over all evaluated cases and over the first ``subset`` case ids.

    Failed cases are counted, never averaged; a missed (empty) prediction is scored by the empty policy,
    so it always worsens the means.
    """
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["case"])
    first = sorted(r["case"] for r in results)[:subset]
    sub = [r for r in ok if r["case"] in set(first)]
    out: dict[str, Any] = {
        "cases": len(results),
        "failed": len(results) - len(ok),
        "empty_predictions": sum(r[t]["empty"] in ("prediction", "both") for r in ok for t in TARGETS),
        "subset": {"size": len(first), "all_cases": len(first) == len(results), "rule": f"first {subset} case ids in sorted order"},
    }
    for target in TARGETS:
        out[target] = {}
        for metric in METRICS:
            vals = [r[target][metric] for r in ok if metric in r[target]]
            if vals:
                out[target][metric] = {"all": _stats(vals), "subset": _stats([r[target][metric] for r in sub])}
    return out


@dataclass
class EvaluateResult:
    output: Path
    summaries: dict = field(default_factory=dict)  # label -> summary dict
    failed: int = 0
    cases: int = 0


def evaluate(opts: EvaluateOptions) -> EvaluateResult:
    """Evaluate every method on every set and write the reports (see the module docstring).

    Raises:
        FolderError: the output folder is a file, not writable, or in use by another process.
    """
    with claim(opts.output, "evaluate"):
        return _evaluate(opts)


def _evaluate(opts: EvaluateOptions) -> EvaluateResult:
    manifest = Manifest.load(opts.manifest)
    methods = _methods(opts.predictions)
    output = Path(opts.output)
    jobs = []
    results: dict[str, list[dict]] = {label: [] for label, _, _ in methods}
    dirs = {}
    for label, folder, index in methods:
        method_dir = output / slug(label)
        dirs[str(method_dir)] = label
        for role in opts.sets:
            for case in manifest.role(role):
                cached = method_dir / "cases" / f"{case['id']}.json"
                entry = index["cases"].get(case["id"])
                pred_files = {k: folder / v for k, v in entry["files"].items()} if entry else {}
                gt_files = {k: manifest.root / v for k, v in case.get("original", {}).items()}
                previous = _cached(cached, _key(pred_files, gt_files, opts.empty, opts.units)) if entry and not opts.force else None
                if previous is not None:
                    results[label].append(previous)
                    continue
                if not entry:
                    failure = {"case": case["id"], "set": role, "error": f"{folder}: no prediction for case {case['id']}"}
                    atomic_write_text(cached, json.dumps(failure, indent=1))
                    results[label].append(failure)
                    continue
                jobs.append((str(method_dir), case["id"], role, pred_files, gt_files, opts.empty, opts.units))
    for done_dir, _, result in run_jobs(_job, jobs, opts.workers, desc="evaluate", quiet=opts.quiet):
        results[dirs[done_dir]].append(result)
    summaries: dict[str, dict] = {}
    failed = total = 0
    for label, folder, _ in methods:
        method_results = sorted(results[label], key=lambda r: (r["set"], r["case"]))
        for r in method_results:
            if "error" in r:
                log.warning("%s, case %s: %s", label, r["case"], r["error"])
        sets = {role: aggregate([r for r in method_results if r["set"] == role], opts.subset) for role in opts.sets}
        summary = {
            "method": label,
            "predictions": str(folder),
            "empty_policy": opts.empty,
            "units": opts.units,
            "sets": sets,
            "metric_per_case": method_results,
        }
        failed += sum(s["failed"] for s in sets.values())
        total += sum(s["cases"] for s in sets.values())
        atomic_write_text(output / slug(label) / "summary.json", json.dumps(summary, indent=1))
        summaries[label] = summary
    write_reports(summaries, manifest, output, opts.sets)
    log.info("evaluated %d methods on %s; %d failed cases -> %s", len(methods), ", ".join(opts.sets), failed, output)
    return EvaluateResult(output, summaries, failed, total)
