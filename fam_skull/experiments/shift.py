"""The shift table: a trained run's implants on inputs that no training case resembles, beside its eval1 cases.

    python -m fam_skull.experiments.shift --run RUN --manifest M --output OUT [--flips] [--keep-floating] [--keep-strays]
        [--no-size-match]

Rows, each built from the manifest's evaluation skulls in their original geometry (LPS) and predicted as files with
``fam-skull predict``:

- ``eval1``: the eval1 cases as prepared (the reference row);
- ``healthy``: the evaluation skulls' complete skulls, no defect: the implant should be empty (its volume, ml);
- ``two defects``: a sphere and a parietotemporal defect cut from one skull at once;
- ``large defect``: bilateral, frontoorbital and parietotemporal defects together, with ``anywhere`` defects added
  until at least 25% of the bone is gone;
- ``field-of-view crop``: the eval1 cases with their lowest 35% of axial slices blank (a scan cut above the orbits);
- ``thick slices``: the eval1 cases at three times their slice spacing (every three slices one slab, bone where any of them is);
- ``real anatomy``: the MNI152 template's skull (:mod:`data_prep.template`, needs nilearn) at the manifest's original
  shape, with sphere, bilateral, parietotemporal, random and anywhere defects;
- ``real anatomy, healthy``: that skull with no defect (its implant should be empty, as for ``healthy``).

Scores: implant DSC, boundary DSC, HD95 (mm) against the reference implant, and the predicted and true implant
volumes (ml). Writes OUT/shift.md, OUT/shift.csv (per case) and OUT/predictions.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from data_prep.defects import DefectError, make_defect
from data_prep.io import atomic_write_text, from_array, read_image, to_array, write_image
from data_prep.manifest import Manifest
from data_prep.preprocess import CANONICAL
from fam_skull.metrics import compute_metrics
from fam_skull.predict import PredictOptions, predict
from fam_skull.predict.options import RIM_MM, SIZE_TOLERANCE, STRAY_MM

log = logging.getLogger("fam_skull.shift")
ROWS = ("eval1", "healthy", "two defects", "large defect", "field-of-view crop", "thick slices", "real anatomy", "real anatomy, healthy")
ANATOMY_DEFECTS = ("sphere", "bilateral", "parietotemporal", "random", "anywhere")
LARGE = 0.25
LARGE_KINDS = ("bilateral", "frontoorbital", "parietotemporal")
LARGE_EXTRA = 12
CROP = 0.35
THICK = 3


@dataclass
class Case:
    row: str
    name: str
    defective: np.ndarray  # LPS (x, y, z)
    implant: np.ndarray
    image: sitk.Image  # the geometry


def _lps(path: Path) -> sitk.Image:
    return sitk.DICOMOrient(read_image(path), CANONICAL)


def _cut(complete: np.ndarray, spacing, kinds: tuple[str, ...], seed: int) -> np.ndarray:
    region = np.zeros(complete.shape, bool)
    for k, kind in enumerate(kinds):
        region |= make_defect(complete, spacing, kind, seed + 101 * k).region
    return region & complete


def _large(complete: np.ndarray, spacing, seed: int) -> np.ndarray:
    """Bilateral, frontoorbital and parietotemporal defects together, then ``anywhere`` defects added one at a time
    until a quarter of the bone is gone (skulls with a face and a base keep most of their bone under the first three)."""
    region = _cut(complete, spacing, LARGE_KINDS, seed)
    for k in range(LARGE_EXTRA):
        if region.sum() >= LARGE * complete.sum():
            break
        region |= _cut(complete, spacing, ("anywhere",), seed + 1000 + k)
    return region


def _thick(image: sitk.Image, masks: list[np.ndarray]) -> tuple[sitk.Image, list[np.ndarray]]:
    """Every THICK axial slices merged into one slab, bone where any of them is: a third of a slab's depth in bone
    lifts its CT value (~1500 HU bone, ~40 HU tissue) well over a bone threshold of 300 HU. (A majority rule would
    erase every horizontal plate thinner than two slices: the vertex, a hole the network is right to fill.)"""
    n = max(1, image.GetSize()[2] // THICK)
    out = [np.asarray(m[:, :, : n * THICK].reshape(*m.shape[:2], n, THICK).any(axis=-1)) for m in masks]
    reference = sitk.Image([*image.GetSize()[:2], n], sitk.sitkUInt8)
    reference.SetSpacing([*image.GetSpacing()[:2], image.GetSpacing()[2] * THICK])
    reference.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0, 0, (THICK - 1) / 2)))
    reference.SetDirection(image.GetDirection())
    return reference, out


def build_cases(manifest: Manifest, seed: int = 0, anatomy: bool = True) -> list[Case]:
    """Every row's cases (the module docstring says how each is made)."""
    cases = []
    eval1 = manifest.role("eval1")
    for case in eval1:
        image = _lps(manifest.file(case, "original", "defective"))
        defective, implant = to_array(image) != 0, to_array(_lps(manifest.file(case, "original", "implant"))) != 0
        cases.append(Case("eval1", case["id"], defective, implant, image))
        crop = defective.copy(), implant.copy()
        low = int(round(CROP * defective.shape[2]))
        for mask in crop:
            mask[:, :, :low] = False
        if crop[1].any():
            cases.append(Case("field-of-view crop", f"{case['id']}_crop", *crop, image))
        thick_image, (complete, thin) = _thick(image, [defective | implant, defective])
        cases.append(Case("thick slices", f"{case['id']}_thick", thin & complete, complete & ~thin, thick_image))
    for skull in sorted({c["skull"] for c in manifest.role("eval1", "eval2")}):
        case = next(c for c in manifest.role("eval1", "eval2") if c["skull"] == skull)
        image = _lps(manifest.file(case, "original", "complete"))
        complete, spacing = to_array(image) != 0, image.GetSpacing()
        cases.append(Case("healthy", f"{skull}_healthy", complete, np.zeros_like(complete), image))
        two = _cut(complete, spacing, ("sphere", "parietotemporal"), seed)
        cases.append(Case("two defects", f"{skull}_two", complete & ~two, two, image))
        large = _large(complete, spacing, seed)
        if large.sum() >= LARGE * complete.sum():
            cases.append(Case("large defect", f"{skull}_large", complete & ~large, large, image))
        else:
            log.warning("%s: no large draw removed %.0f%% of the bone", skull, 100 * LARGE)
    if anatomy:
        from data_prep.template import template_skull

        shape = tuple(manifest.role("eval1")[0]["layout"]["original"]["shape"]) if eval1 else None
        image = template_skull(shape)
        complete = to_array(image) != 0
        cases.append(Case("real anatomy, healthy", "mni152_healthy", complete, np.zeros_like(complete), image))
        for kind in ANATOMY_DEFECTS:
            try:
                region = _cut(complete, image.GetSpacing(), (kind,), seed)
            except DefectError as e:
                log.warning("real anatomy, %s: %s", kind, e)
                continue
            cases.append(Case("real anatomy", f"mni152_{kind}", complete & ~region, region, image))
    return cases


def _write(case: Case, folder: Path) -> Path:
    image = from_array(case.defective.astype(np.uint8), None)
    image.CopyInformation(case.image)
    path = folder / f"{case.name}.nii.gz"
    write_image(image, path)
    return path


def shift_table(
    run: Path,
    manifest: Path,
    output: Path,
    flips: bool = False,
    rim_mm: float | None = RIM_MM,
    anatomy: bool = True,
    seed: int = 0,
    size_tolerance: float | None = SIZE_TOLERANCE,
    stray_mm: float | None = STRAY_MM,
) -> tuple[str, list[dict]]:
    """Build, predict and score every row; returns the Markdown table and the per-case rows (also written)."""
    data = Manifest.load(manifest)
    cases = build_cases(data, seed, anatomy)
    inputs = output / "inputs"
    files = [_write(c, inputs) for c in cases]
    predictions = output / "predictions"
    opts = PredictOptions(
        run=run, output=predictions, files=files, flips=flips, rim_mm=rim_mm, stray_mm=stray_mm, size_tolerance=size_tolerance, quiet=True
    )
    predict(opts)
    results: list[dict] = []
    for case in cases:
        path = predictions / f"{case.name}_implant.nii.gz"
        if not path.is_file():
            results.append({"row": case.row, "case": case.name, "error": "not predicted (see the log)"})
            continue
        predicted = sitk.DICOMOrient(read_image(path), CANONICAL)
        pred = to_array(predicted) != 0
        spacing = case.image.GetSpacing()
        ml = float(np.prod(spacing)) / 1000
        result: dict = {"row": case.row, "case": case.name, "predicted_ml": float(pred.sum() * ml)}
        result["true_ml"] = float(case.implant.sum() * ml)
        if case.implant.any():
            m = compute_metrics(pred, case.implant, spacing, defective=case.defective)
            result |= {"dsc": m["dsc"], "bdsc": m["bdsc"], "hd95": m["hd95"]}
        results.append(result)
    table = _table(results)
    atomic_write_text(output / "shift.md", table)
    out = io.StringIO()
    writer = csv.DictWriter(out, ["row", "case", "dsc", "bdsc", "hd95", "predicted_ml", "true_ml", "error"])
    writer.writeheader()
    writer.writerows(results)
    atomic_write_text(output / "shift.csv", out.getvalue())
    return table, results


def _mean(results: list[dict], key: str) -> str:
    values = [r[key] for r in results if r.get(key) is not None]
    return f"{np.mean(values):.3f}" if values else "-"


def _table(results: list[dict]) -> str:
    lines = [
        "| input | cases | implant DSC | boundary DSC | HD95 (mm) | predicted implant (ml) | true implant (ml) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        chosen = [r for r in results if r["row"] == row and "error" not in r]
        if not chosen:
            continue
        cells = [_mean(chosen, k) for k in ("dsc", "bdsc", "hd95", "predicted_ml", "true_ml")]
        if row.endswith("healthy"):
            cells[3] += f" (max {max(r['predicted_ml'] for r in chosen):.3f})"
        lines.append(f"| {row} | {len(chosen)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a run's implants on shifted inputs, beside its eval1 cases")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--flips", action="store_true", help="test-time flips (predict --flips)")
    parser.add_argument("--keep-floating", action="store_true", help="keep implant pieces away from the skull (predict --keep-floating)")
    parser.add_argument("--keep-strays", action="store_true", help="keep small implant pieces far from the implant (predict --keep-strays)")
    parser.add_argument("--no-size-match", action="store_true", help="never scale a skull to the training size (predict --no-size-match)")
    parser.add_argument("--no-anatomy", dest="anatomy", action="store_false", help="leave out the MNI152 row (needs nilearn)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rim_mm = None if args.keep_floating else RIM_MM
    size_tolerance = None if args.no_size_match else SIZE_TOLERANCE
    stray_mm = None if args.keep_strays else STRAY_MM
    table, _ = shift_table(args.run, args.manifest, args.output, args.flips, rim_mm, args.anatomy, args.seed, size_tolerance, stray_mm)
    print(table)


if __name__ == "__main__":
    main()
