"""``fam-skull predict``: completed skulls and implants, written back in each case's original geometry.

The implant is the network's foreground minus the defective skull it was given (on the training grid; for an
implant network that is its output, for a completion network the bone it added), resampled to the original
geometry, minus the defective skull, with components under ``min_component_mm3`` removed. The completed skull
is the defective skull (the known input, exact) united with that implant.

Output folder: ``<id>_complete.nii.gz`` and ``<id>_implant.nii.gz`` per case (optionally ``<id>_implant.stl``,
a mesh in LPS millimetres for 3D printing) and ``predictions.json`` listing them; the index is rewritten
after every case, so an interrupted run keeps what it finished and a rerun skips it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import yaml
from scipy import ndimage

from data_prep.folder import claim
from data_prep.io import VolumeError, atomic_write_bytes, atomic_write_text, from_array, read_image, read_json, to_array, write_image
from data_prep.manifest import Manifest
from data_prep.preprocess import BONE_HU, Layout, binarize, largest_component
from data_prep.progress import progress
from data_prep.sources import safe_id, stem
from fam_skull.models import implant_mask
from fam_skull.options import PredictOptions
from fam_skull.refine import refine_implant, scan_probability
from fam_skull.runs import INDEX, load_run, method_label

log = logging.getLogger("fam_skull.predict")
STAGES = ("coarse", "refined")


def clean_implant(implant: np.ndarray, spacing: Sequence[float], min_component_mm3: float) -> np.ndarray:
    """Drop connected components smaller than ``min_component_mm3`` (resampling leaves thin slivers along
    the defect's rim)."""
    if min_component_mm3 <= 0 or not implant.any():
        return implant
    labels, n = ndimage.label(implant, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel()) * float(np.prod(spacing))
    keep = sizes >= min_component_mm3
    keep[0] = False
    return keep[labels]


def write_stl(mask: np.ndarray, image: sitk.Image, path: Path) -> int:
    """A binary STL of ``mask``'s surface in physical (LPS) millimetres; returns the triangle count."""
    from skimage.measure import marching_cubes

    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, 0.5)
    verts -= 1  # undo the padding: vertices are continuous voxel indices
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.asarray(image.GetOrigin()) + (verts * np.asarray(image.GetSpacing())) @ direction.T
    tri = points[faces].astype(np.float32)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    records = np.zeros(len(tri), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    records["n"], records["v"] = normals, tri
    header = b"fam-skull implant, LPS mm".ljust(80, b" ") + np.uint32(len(tri)).tobytes()
    atomic_write_bytes(path, header + records.tobytes())
    return len(tri)


@dataclass
class PredictResult:
    output: Path
    predicted: int
    reused: int
    failed: list[dict]


def _cases(opts: PredictOptions, grid) -> list[dict]:
    """The cases to predict as ``{"id", "source", "load"}``; ``load()`` returns the grid defective skull, the
    case's Layout, and its canonical defective skull at the scan's resolution (None when only the grid one
    exists)."""
    out = []
    if opts.manifest is not None:
        manifest = Manifest.load(opts.manifest)
        if tuple(manifest.data["grid"]) != tuple(grid):
            raise ValueError(
                f"{manifest.path}: grid {manifest.data['grid']} differs from the run's {list(grid)}; prepare the data on the run's grid"
            )
        for case in manifest.role(*opts.roles):

            def load(case=case, manifest=manifest):
                layout = Layout.from_dict(case["layout"])
                defective_grid = to_array(read_image(manifest.file(case, "grid", "defective"))) != 0
                original = case.get("original", {}).get("defective")
                canonical = layout.canonical_array(read_image(manifest.root / original)) != 0 if original else None
                return defective_grid, layout, canonical

            out.append({"id": case["id"], "source": case["id"], "load": load})
    for path in opts.files:
        out.append(
            {
                "id": safe_id(stem(Path(path))),
                "source": str(path),
                "load": lambda path=Path(path): load_file(path, grid, opts.input_kind, opts.threshold),
            }
        )
    return out


def load_file(
    path: Path, grid: Sequence[int], input_kind: str = "auto", threshold: float = BONE_HU
) -> tuple[np.ndarray, Layout, np.ndarray]:
    """A defective skull file as the network sees it: its grid mask, its Layout and its canonical mask at the
    scan's resolution (binarized as ``prepare`` does, largest component kept).

    Raises:
        VolumeError: the file cannot be used (the message names it).
    """
    image = read_image(path)
    layout = Layout.plan(image, grid)
    canonical = largest_component(binarize(layout.canonical_array(image), input_kind, threshold, str(path)))
    return layout.to_grid(canonical), layout, canonical


def coarse_implant(
    model: torch.nn.Module,
    defective_grid: np.ndarray,
    layout: Layout,
    canonical: np.ndarray,
    device: torch.device,
    roi_size: Sequence[int] | None = None,
    min_component_mm3: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The defective skull and the coarse network's implant, both in the original geometry (x, y, z arrays).

    The implant is separated from the input on the grid (where input and output align exactly) and then
    resampled; subtracting a resampled completed skull from the original defective one instead leaves slivers
    along the whole skull surface.
    """
    defective = to_array(layout.to_original(canonical)) != 0
    added = to_array(layout.from_grid(implant_on_grid(model, defective_grid, device, roi_size))) != 0
    return defective, clean_implant(added & ~defective, layout.original.spacing, min_component_mm3)


def write_case(output: Path, case_id: str, defective: np.ndarray, implant: np.ndarray, layout: Layout, stl: bool = False) -> dict:
    """Write ``<id>_complete.nii.gz``, ``<id>_implant.nii.gz`` (and ``<id>_implant.stl``) in the original
    geometry; returns their names."""
    files = {"complete": f"{case_id}_complete.nii.gz", "implant": f"{case_id}_implant.nii.gz"}
    write_image(from_array((defective | implant).astype(np.uint8), layout.original), output / files["complete"])
    implant_image = from_array(implant.astype(np.uint8), layout.original)
    write_image(implant_image, output / files["implant"])
    if stl and implant.any():
        files["stl"] = f"{case_id}_implant.stl"
        write_stl(implant, implant_image, output / files["stl"])
    return files


@torch.no_grad()
def implant_on_grid(
    model: torch.nn.Module, defective_grid: np.ndarray, device: torch.device, roi_size: Sequence[int] | None = None
) -> np.ndarray:
    """The network's implant (:func:`~fam_skull.models.implant_mask`) on the training grid."""
    x = torch.from_numpy(defective_grid.astype(np.float32))[None, None].to(device)
    if roi_size is not None:
        from monai.inferers import sliding_window_inference

        logits = sliding_window_inference(x, roi_size, 1, model, overlap=0.25)
        assert isinstance(logits, torch.Tensor)  # the model returns one tensor
    else:
        logits = model(x)
    return implant_mask(logits, x)[0, 0].cpu().numpy()


def predict(opts: PredictOptions) -> PredictResult:
    """Predict every case; one case's bad input is recorded in the index and the others go on.

    Raises:
        FolderError: the output folder is a file, not writable, or in use by another process.
    """
    with claim(opts.output, "predict"):
        return _predict(opts)


def _predict(opts: PredictOptions) -> PredictResult:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto" else opts.device)
    model, config, grid, ckpt = load_run(opts.run, opts.checkpoint, device)
    stage = opts.stage or ("refined" if config.stage == "refine" else "coarse")
    if stage not in STAGES or (stage == "refined" and config.stage != "refine"):
        raise ValueError(f"stage: {stage!r} needs one of {', '.join(STAGES)}; 'refined' needs a refinement run (stage: refine)")
    refiner, checkpoints = None, [ckpt]
    if config.stage == "refine":  # the coarse stage runs first: its run is named in the refinement run's config
        refiner = model if stage == "refined" else None
        model, _, _, coarse_ckpt = load_run(config.refine.coarse_run, config.refine.coarse_checkpoint, device)
        checkpoints = [coarse_ckpt] + ([ckpt] if refiner is not None else [])
    if opts.roi_size is not None and config.model.name == "linear_ae":
        raise ValueError("roi_size: the linear-latent autoencoder needs the whole grid; drop --roi-size")
    output = Path(opts.output)
    index_path = output / INDEX
    index = {}
    if index_path.is_file() and not opts.force:
        try:
            index = read_json(index_path)
        except ValueError as e:
            log.warning("%s; predicting every case again", e)
        if not isinstance(index, dict) or not isinstance(index.get("cases", {}), dict):
            log.warning("%s: not an index written by 'fam-skull predict'; predicting every case again", index_path)
            index = {}
    weights = ";".join(f"{c.resolve()}:{c.stat().st_size}:{c.stat().st_mtime_ns}" for c in checkpoints) + f";{stage}"
    if index.get("weights") != weights:  # a retrained or another checkpoint or stage: earlier predictions are stale
        index["cases"] = {}
    index.update(
        {
            "run": str(Path(opts.run).resolve()),
            "checkpoint": str(ckpt),
            "weights": weights,
            "stage": stage,
            "method": method_label(config),
            "config": yaml.safe_load(config.to_yaml()),
        }
    )
    done = index["cases"]
    failed = index["failed"] = []
    cases = _cases(opts, grid)
    reused = predicted = 0
    for case in progress(cases, desc="predict", unit="case", quiet=opts.quiet):
        cid = case["id"]
        entry = done.get(cid)
        if entry and all((output / f).is_file() for f in entry["files"].values()):
            reused += 1
            continue
        try:
            defective_grid, layout, canonical = case["load"]()
            if canonical is None:  # a grid-only case: its scan-resolution skull is the resampled grid one
                canonical = layout.canonical_from_grid(defective_grid) >= 0.5
            if refiner is None:
                defective, implant = coarse_implant(model, defective_grid, layout, canonical, device, opts.roi_size, opts.min_component_mm3)
            else:
                defective = to_array(layout.to_original(canonical)) != 0
                probability = scan_probability(model, defective_grid, layout, canonical, device)
                refined = refine_implant(
                    refiner, canonical, probability, layout.canonical.spacing, config.refine.patch, config.refine.margin_mm, device
                )
                added = to_array(layout.to_original(refined)) != 0
                implant = clean_implant(added & ~defective, layout.original.spacing, opts.min_component_mm3)
            files = write_case(output, cid, defective, implant, layout, opts.stl)
            done[cid] = {"source": case["source"], "files": files, "implant_voxels": int(implant.sum())}
            predicted += 1
        except (VolumeError, ValueError, RuntimeError) as e:
            log.warning("skipped %s: %s", cid, e)
            failed.append({"case": cid, "reason": str(e)})
        atomic_write_text(index_path, json.dumps(index, indent=1))
    atomic_write_text(index_path, json.dumps(index, indent=1))
    log.info("predicted %d cases, reused %d, failed %d -> %s", predicted, reused, len(failed), output)
    return PredictResult(output, predicted, reused, failed)
