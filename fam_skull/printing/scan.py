"""``fam-skull implant``: one scan (a DICOM folder, NIfTI, NRRD; CT or mask) in, a printable implant out.

Writes into the output folder, in the scan's own geometry: ``skull_mask.nii.gz`` (the skull the CT gave, or the
mask as read), ``implant.nii.gz``, ``completed_skull.nii.gz``, ``implant.stl`` (watertight, outward normals, mm in
``frame``), ``report.json`` (:mod:`fam_skull.printing.report`, with each phase's time and peak memory, and the
settings) and ``report.png`` (three slices and a rendered view). Nothing is written for a scan that cannot be used:
the error names it and says what to do.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.ct import skull_from_ct
from data_prep.folder import claim
from data_prep.io import VolumeError, atomic_write_text, from_array, read_image, write_image
from data_prep.preprocess import Layout, largest_component
from data_prep.progress import peak_memory_mib, progress
from fam_skull.predict.mesh import save_stl, surface_mesh
from fam_skull.predict.options import Frame
from fam_skull.predict.predictor import load_predictor
from fam_skull.printing.options import ImplantOptions
from fam_skull.printing.report import implant_figure, implant_report

log = logging.getLogger("fam_skull.implant")
PHASES = ("read", "skull", "networks", "mesh", "report")
RENDER_MM = 2.0  # the rendered view's skull is meshed on a grid of about this spacing: enough for a picture


@dataclass
class ImplantResult:
    output: Path
    report: dict  # what report.json holds


def implant(opts: ImplantOptions) -> ImplantResult:
    """The implant of one scan (module docstring).

    Raises:
        VolumeError: the scan cannot be read or holds no skull. ValueError: bad options or run.
        FolderError: the output folder is a file, not writable, or in use.
    """
    with claim(opts.output, "implant"):
        return _implant(opts)


def _implant(opts: ImplantOptions) -> ImplantResult:
    out = Path(opts.output)
    seconds: dict[str, float] = {}
    memory: dict[str, float | None] = {}
    bar = progress(PHASES, desc="implant", unit="phase", quiet=opts.quiet)
    phases = iter(bar)
    clock = time.perf_counter()
    peak_memory_mib()

    def done(phase: str) -> None:
        nonlocal clock
        seconds[phase] = round(time.perf_counter() - clock, 3)
        memory[phase] = peak_memory_mib()
        clock = time.perf_counter()
        log.info("%s: %.1f s, peak memory %s MiB", phase, seconds[phase], memory[phase])
        next(phases, None)

    next(phases, None)
    predictor, config, grid, _, stage = load_predictor(opts.run, opts.checkpoint, opts.device, opts.stage, None, opts.min_component_mm3)
    image = read_image(opts.scan, opts.series)
    layout = Layout.plan(image, grid)
    array = layout.canonical_array(image)
    done("read")
    is_ct = opts.input_kind == "ct" or (opts.input_kind == "auto" and array.min() < 0)
    if is_ct:
        try:
            extraction = skull_from_ct(array, layout.canonical.spacing, opts.threshold)
        except VolumeError as e:
            raise VolumeError(f"{opts.scan}: {e}") from None
        canonical, removed = extraction.skull, extraction.removed_ml
    else:
        canonical, removed = largest_component(array != 0), {}
        if not canonical.any():
            raise VolumeError(f"{opts.scan}: the mask is empty; pass a skull mask, or a CT with --input-kind ct")
    done("skull")
    case = predictor.predict_case(layout.to_grid(canonical), layout, canonical)
    defective, piece = case.defective, case.implant
    done("networks")
    original = layout.original
    spacing = np.asarray(original.spacing)
    write_image(from_array(defective.astype(np.uint8), original), out / "skull_mask.nii.gz")
    write_image(from_array(piece.astype(np.uint8), original), out / "implant.nii.gz")
    write_image(from_array((defective | piece).astype(np.uint8), original), out / "completed_skull.nii.gz")
    reference = from_array(piece.astype(np.uint8), original)
    mesh = None
    if piece.any():  # a healthy skull gets no implant, and so no mesh
        mesh = surface_mesh(piece, reference, frame=opts.frame, smoothing=opts.smoothing, faces=opts.faces)
        save_stl(mesh, out / "implant.stl", opts.frame)
    done("mesh")
    report = implant_report(piece, defective, spacing, mesh)
    skull_mesh = _render_mesh(defective, reference, opts.frame)
    title = f"{Path(opts.scan).name}: implant {report['volume_ml']:.1f} ml" + (
        f", {report['thickness_mm']['mean']:.1f} mm thick on average" if report["implant"] else " (no defect found)"
    )
    implant_figure(
        defective,
        piece,
        spacing,
        skull_mesh,
        _render_mesh(piece, reference, opts.frame) if mesh is not None else None,
        out / "report.png",
        title,
    )
    done("report")
    report |= {
        "scan": str(opts.scan),
        "run": str(opts.run),
        "stage": stage,
        "method": config.method,
        "input": "ct" if is_ct else "mask",
        "skull_ml": float(canonical.sum() * spacing.prod() / 1000),
        "removed_from_ct_ml": removed,
        "size_factor": case.size_factor,  # the scaling the networks saw the skull at (1.0: its own size)
        "frame": opts.frame,
        "seconds": seconds,
        "peak_memory_mib": memory,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "quiet"},
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    return ImplantResult(out, report)


def _render_mesh(mask: np.ndarray, image, frame: Frame):
    """A coarse mesh of ``mask`` for the picture (a full-resolution one has too many triangles to draw quickly): the
    mask taken every k-th voxel (k ~ RENDER_MM / spacing)."""
    step = np.maximum(1, np.round(RENDER_MM / np.asarray(image.GetSpacing()))).astype(int)
    coarse = mask[:: step[0], :: step[1], :: step[2]]
    if not coarse.any():  # a piece smaller than the picture's grid: drawn as nothing
        return None
    grid = from_array(coarse.astype(np.uint8))
    grid.SetSpacing((np.asarray(image.GetSpacing()) * step).tolist())
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    return surface_mesh(coarse, grid, frame=frame, smoothing=2)
