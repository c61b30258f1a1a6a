"""``fam-skull predict``: completed skulls and implants, written back in each case's original geometry.

The implant is the network's foreground minus the defective skull it was given, brought to the original
geometry, minus the defective skull there, with components under ``min_component_mm3`` removed, and those that
meet no bone (``rim_mm``) or lie small and far from the implant's large pieces (``stray_mm``). The coarse stage
separates it on the training grid (where input and output align exactly) and resamples it; the refinement stage
predicts it at the scan's resolution in a box around the coarse implant. The completed skull is the defective
skull (the known input, exact) united with that implant.

Output folder (:class:`~fam_skull.common.paths.PredictionFolder`): ``<id>_complete.nii.gz`` and
``<id>_implant.nii.gz`` per case (optionally ``<id>_implant.stl``, a mesh in LPS millimetres) and
``predictions.json`` listing them; the index is rewritten after every case, so an interrupted run keeps what it
finished and a rerun skips it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from data_prep.folder import claim
from data_prep.io import VolumeError, atomic_write_text, file_stamp, read_json, to_array
from data_prep.preprocess import Layout
from data_prep.progress import progress
from fam_skull.common.paths import PredictionFolder
from fam_skull.config import Config, RefineConfig, method_label
from fam_skull.networks.implant import clean_implant, drop_strays, implant_on_grid, refine_implant, rim_implant, scan_probability
from fam_skull.networks.trained import load_run
from fam_skull.predict.inputs import CaseInput, file_cases, manifest_cases
from fam_skull.predict.options import MIN_COMPONENT_MM3, RIM_MM, SIZE_TOLERANCE, STRAY_MM, PredictOptions
from fam_skull.predict.outputs import write_case
from fam_skull.predict.size import bone_centre, rescale, size_factor, training_skull_size

log = logging.getLogger("fam_skull.predict")
STAGES = ("coarse", "refined")


@dataclass
class Predictor:
    """A run's networks and how they make an implant: the coarse network, and the refinement network with its
    run's ``refine`` settings (patch, margin) when the refined stage runs."""

    coarse: torch.nn.Module
    device: torch.device
    refiner: torch.nn.Module | None = None
    refine: RefineConfig = field(default_factory=RefineConfig)
    roi_size: Sequence[int] | None = None
    min_component_mm3: float = MIN_COMPONENT_MM3
    rim_mm: float | None = RIM_MM
    stray_mm: float | None = STRAY_MM
    flips: bool = False
    skull_size_mm: float | None = None  # the training skulls' size (None: no skull is scaled)
    size_tolerance: float | None = SIZE_TOLERANCE

    def implant(self, defective_grid: np.ndarray, layout: Layout, canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The defective skull and the implant, both in the original geometry (x, y, z arrays)."""
        case = self.predict_case(defective_grid, layout, canonical)
        return case.defective, case.implant

    def predict_case(self, defective_grid: np.ndarray, layout: Layout, canonical: np.ndarray) -> CasePrediction:
        """:meth:`implant`, and with ``flips`` the disagreement of the two mirrored predictions; a skull whose size
        differs from the training skulls' by more than ``size_tolerance`` is predicted scaled to their size
        (:mod:`fam_skull.predict.size`)."""
        defective = to_array(layout.to_original(canonical)) != 0
        factor = 1.0
        if self.skull_size_mm is not None and self.size_tolerance is not None and canonical.any():
            factor = size_factor(canonical, layout.canonical.spacing, self.skull_size_mm, self.size_tolerance)
        if factor == 1.0:
            added, disagreement = self._canonical_implant(defective_grid, layout, canonical)
        else:
            centre = bone_centre(canonical)
            scaled = rescale(canonical, factor, centre)
            added, disagreement = self._canonical_implant(layout.to_grid(scaled), layout, scaled)
            added = rescale(added, 1 / factor, centre)
            if disagreement is not None:
                disagreement = rescale(disagreement, 1 / factor, centre)
        spacing = layout.original.spacing
        implant = clean_implant((to_array(layout.to_original(added)) != 0) & ~defective, spacing, self.min_component_mm3)
        implant = drop_strays(rim_implant(implant, defective, spacing, self.rim_mm), spacing, self.stray_mm)
        if disagreement is not None:  # in percent, in the original geometry
            disagreement = to_array(layout.to_original(np.rint(100 * np.clip(disagreement, 0, 1)).astype(np.uint8)))
        return CasePrediction(defective, implant, disagreement, factor)

    def _canonical_implant(self, defective_grid: np.ndarray, layout: Layout, canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The networks' implant (bool) and, with flips, their disagreement (0-1), both canonical at the scan's
        resolution."""
        disagreement = None
        if self.refiner is None:
            if self.flips:
                disagreement = np.zeros(defective_grid.shape, np.float32)
            grid = implant_on_grid(self.coarse, defective_grid, self.device, self.roi_size, self.flips, disagreement)
            if disagreement is not None:
                disagreement = layout.canonical_from_grid(disagreement)
            return layout.canonical_from_grid(grid) >= 0.5, disagreement
        probability = scan_probability(self.coarse, defective_grid, layout, canonical, self.device, self.flips)
        r = self.refine
        if self.flips:
            disagreement = np.zeros(canonical.shape, np.float32)
        refined = refine_implant(
            self.refiner,
            canonical,
            probability,
            layout.canonical.spacing,
            r.patch,
            r.margin_mm,
            self.device,
            flips=self.flips,
            disagreement=disagreement,
        )
        return refined, disagreement


@dataclass
class CasePrediction:
    """One case's prediction in its original geometry: the defective skull, the implant, and (with test-time
    flips) how far the two mirrored implant probabilities differ per voxel, in percent."""

    defective: np.ndarray
    implant: np.ndarray
    disagreement: np.ndarray | None = None
    size_factor: float = 1.0  # the scaling the networks saw the skull at (fam_skull.predict.size)


@dataclass
class PredictResult:
    output: Path
    predicted: int
    reused: int
    failed: list[dict] = field(default_factory=list)


def _previous_index(folder: PredictionFolder, force: bool) -> dict:
    if force or not folder.index.is_file():
        return {}
    try:
        index = read_json(folder.index)
    except ValueError as e:
        log.warning("%s; predicting every case again", e)
        return {}
    if not isinstance(index, dict) or not isinstance(index.get("cases", {}), dict):
        log.warning("%s: not an index written by 'fam-skull predict'; predicting every case again", folder.index)
        return {}
    return index


def predict_cases(
    predictor: Predictor,
    cases: Sequence[CaseInput],
    output: Path,
    about: dict,
    *,
    stl: bool = False,
    force: bool = False,
    quiet: bool = False,
) -> PredictResult:
    """Predict every case into ``output``; one case's bad input is recorded in the index and the others go on.

    ``about`` describes the networks (``weights``: what they were loaded from; run, method, ...) and goes into the
    index; cases predicted before with the same weights are reused.
    """
    folder = PredictionFolder(output)
    index = _previous_index(folder, force)
    if index.get("weights") != about["weights"]:  # a retrained or another checkpoint or stage: earlier predictions are stale
        index["cases"] = {}
    index.update(about)
    done = index.setdefault("cases", {})
    failed = index["failed"] = []
    reused = predicted = 0
    for case in progress(cases, desc="predict", unit="case", quiet=quiet):
        entry = done.get(case.id)
        if entry and entry.get("stamp") == case.stamp and all((output / f).is_file() for f in entry["files"].values()):
            reused += 1
            continue
        try:
            defective_grid, layout, canonical = case.load()
            prediction = predictor.predict_case(defective_grid, layout, canonical)
            files = write_case(output, case.id, prediction.defective, prediction.implant, layout, stl, prediction.disagreement)
            implant = prediction.implant
            done[case.id] = {
                "source": case.source,
                "stamp": case.stamp,
                "files": files,
                "implant_voxels": int(implant.sum()),
                "size_factor": prediction.size_factor,
            }
            predicted += 1
        except (VolumeError, ValueError, RuntimeError) as e:
            log.warning("skipped %s: %s", case.id, e)
            failed.append({"case": case.id, "reason": str(e)})
        atomic_write_text(folder.index, json.dumps(index, indent=1))
    atomic_write_text(folder.index, json.dumps(index, indent=1))
    log.info("predicted %d cases, reused %d, failed %d -> %s", predicted, reused, len(failed), output)
    return PredictResult(output, predicted, reused, failed)


def load_predictor(
    run: Path,
    checkpoint: str = "best",
    device: str = "auto",
    stage: str | None = None,
    roi_size: Sequence[int] | None = None,
    min_component_mm3: float = MIN_COMPONENT_MM3,
    rim_mm: float | None = RIM_MM,
    flips: bool = False,
    size_tolerance: float | None = SIZE_TOLERANCE,
    stray_mm: float | None = STRAY_MM,
) -> tuple[Predictor, Config, tuple[int, ...], list[Path], str]:
    """The :class:`Predictor` of a trained run (a refinement run brings its coarse run), its config, grid, the
    checkpoints it was loaded from and the stage it runs (default: refined for a refinement run, else coarse).

    Raises:
        ValueError: a stage the run does not have, or ``roi_size`` for a network that needs the whole grid.
        ConfigError, CheckpointError: the run cannot be loaded.
    """
    torch_device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    model, config, grid, ckpt = load_run(run, checkpoint, torch_device)
    stage = stage or ("refined" if config.stage == "refine" else "coarse")
    if stage not in STAGES or (stage == "refined" and config.stage != "refine"):
        raise ValueError(f"stage: {stage!r} needs one of {', '.join(STAGES)}; 'refined' needs a refinement run (stage: refine)")
    if roi_size is not None and config.model.name == "linear_ae":
        raise ValueError("roi_size: the linear-latent autoencoder needs the whole grid; drop --roi-size")
    checkpoints = [ckpt]
    predictor = Predictor(
        model, torch_device, roi_size=roi_size, min_component_mm3=min_component_mm3, rim_mm=rim_mm, stray_mm=stray_mm, flips=flips
    )
    if size_tolerance is not None:
        predictor.size_tolerance, predictor.skull_size_mm = size_tolerance, training_skull_size(run, Path(config.data.manifest))
    if config.stage == "refine":  # the coarse stage runs first: its run is named in the refinement run's config
        coarse, _, _, coarse_ckpt = load_run(config.refine.coarse_run, config.refine.coarse_checkpoint, torch_device)
        predictor.coarse, checkpoints = coarse, [coarse_ckpt]
        if stage == "refined":
            predictor.refiner, predictor.refine = model, config.refine
            checkpoints.append(ckpt)
    return predictor, config, grid, checkpoints, stage


def predict(opts: PredictOptions) -> PredictResult:
    """Predict every case of ``opts`` (a manifest's roles and/or files) with a trained run.

    Raises:
        ValueError: bad options (a stage the run does not have, a manifest on another grid).
        ConfigError, CheckpointError: the run cannot be loaded.
        FolderError: the output folder is a file, not writable, or in use by another process.
    """
    with claim(opts.output, "predict"):
        predictor, config, grid, checkpoints, stage = load_predictor(
            opts.run,
            opts.checkpoint,
            opts.device,
            opts.stage,
            opts.roi_size,
            opts.min_component_mm3,
            opts.rim_mm,
            opts.flips,
            opts.size_tolerance,
            opts.stray_mm,
        )
        cases = (manifest_cases(opts.manifest, opts.roles, grid) if opts.manifest is not None else []) + file_cases(
            opts.files, grid, opts.input_kind, opts.threshold
        )
        about = {
            "run": str(Path(opts.run).resolve()),
            "checkpoint": str(checkpoints[-1]),
            # what the files depend on: other weights or other post-processing make earlier predictions stale
            "weights": {
                "checkpoints": [file_stamp(c) for c in checkpoints],
                "stage": stage,
                "min_component_mm3": opts.min_component_mm3,
                "rim_mm": opts.rim_mm,
                "stray_mm": opts.stray_mm,
                "flips": opts.flips,
                "size_tolerance": opts.size_tolerance,
                "skull_size_mm": predictor.skull_size_mm,
            },
            "stage": stage,
            "method": method_label(config),
            "config": yaml.safe_load(config.to_yaml()),
        }
        return predict_cases(predictor, cases, Path(opts.output), about, stl=opts.stl, force=opts.force, quiet=opts.quiet)
