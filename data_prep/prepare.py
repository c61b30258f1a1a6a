"""``fam-skull prepare``: dataset in, preprocessed volumes, defects, implants and a manifest out."""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.defects import DEFECT_TYPES, DefectError, make_defect
from data_prep.folder import claim
from data_prep.io import Geometry, VolumeError, atomic_write_text, float3, from_array, int3, read_image, read_json, write_image
from data_prep.manifest import FORMAT, KINDS, ROLES, Manifest
from data_prep.phantom import synthetic_skull
from data_prep.preprocess import BONE_HU, Layout, binarize, largest_component
from data_prep.progress import run_jobs
from data_prep.sources import Skip, SourceCase, discover

log = logging.getLogger("fam_skull.prepare")

DEFAULT_DEFECTS = ("sphere", "cube", "bilateral", "frontoorbital", "parietotemporal")
DEFAULT_SHIFT = ("random", "facial")
BYTES_PER_VOXEL = 24  # peak memory per grid voxel while a case is prepared (masks and float32 resize buffers)


@dataclass
class PrepareOptions:
    """Every parameter of ``fam-skull prepare``; the CLI flags have the same names.

    Attributes:
        output: dataset folder to write.
        source: ``skullbreak``, ``skullfix``, ``complete``, ``pairs``, ``nnunet`` or ``synthetic``.
        path: the dataset root, folder or CSV (not for ``synthetic``).
        nnunet_label: what an nnU-Net dataset's label holds: ``auto`` (by the label names in its dataset.json),
            ``implant`` or ``complete`` (every foreground label is that).
        synthetic: number of synthetic skulls.
        synthetic_shape: grid the synthetic skulls are rasterized on (their "original" space);
            defaults to ``grid``.
        grid: training grid (x, y, z).
        axial_slices: crop/pad to this many axial slices (top kept) before resizing; None keeps all.
        keep_largest: keep the largest connected component of complete and defective skulls.
        input_kind: ``auto`` (negative values mean CT), ``mask`` (nonzero) or ``ct`` (>= threshold HU).
        threshold: bone threshold in HU for CT.
        defects: defect types generated for training (and eval1) where a dataset has none.
        shift_defects: defect types of eval2 (not seen in training). For SkullBreak the default is
            random_1, random_2; for generated defects random and facial.
        val_fraction, eval_fraction: fractions of skulls held out for validation and evaluation.
        eval1, eval2: skull (or case) ids naming the evaluation sets explicitly.
        seed: seed of splits and defects.
        workers: parallel processes.
        force: redo finished cases.
        strict: nonzero exit when anything was skipped.
        refine_data: also write train and val volumes in the original geometry (at the scan's resolution),
            which the refinement stage trains on; evaluation sets always have them.
    """

    output: Path
    source: str = "synthetic"
    path: Path | None = None
    nnunet_label: str = "auto"
    synthetic: int = 0
    synthetic_shape: tuple[int, int, int] | None = None
    grid: tuple[int, int, int] = (256, 256, 128)
    axial_slices: int | None = None
    keep_largest: bool = True
    input_kind: str = "auto"
    threshold: float = BONE_HU
    defects: tuple[str, ...] = DEFAULT_DEFECTS
    shift_defects: tuple[str, ...] | None = None
    val_fraction: float = 0.1
    eval_fraction: float = 0.2
    eval1: tuple[str, ...] = ()
    eval2: tuple[str, ...] = ()
    seed: int = 0
    workers: int = 1
    force: bool = False
    strict: bool = False
    quiet: bool = False
    mandible: bool = False
    refine_data: bool = True

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        for name in ("defects", "shift_defects"):
            for kind in getattr(self, name) or ():
                if kind not in DEFECT_TYPES and self.source in ("synthetic", "complete"):
                    raise ValueError(f"{name}: unknown defect type {kind!r}; choose from {', '.join(DEFECT_TYPES)}")
        if self.shift_defects is None:
            self.shift_defects = ("random_1", "random_2") if self.source == "skullbreak" else DEFAULT_SHIFT
        if not 0 <= self.val_fraction < 1 or not 0 <= self.eval_fraction < 1:
            raise ValueError("val_fraction and eval_fraction must lie in [0, 1)")
        for name in ("grid", "synthetic_shape"):
            shape = getattr(self, name)
            if shape is not None and (len(shape) != 3 or min(shape) < 2):
                raise ValueError(f"{name}: three sizes x,y,z of at least 2 voxels, got {','.join(map(str, shape)) or 'nothing'}")
        largest = max(np.prod(self.grid, dtype=float), np.prod(self.synthetic_shape or self.grid, dtype=float))
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if largest * BYTES_PER_VOXEL > memory:
            raise ValueError(
                f"grid: {largest:.3g} voxels need about {largest * BYTES_PER_VOXEL / 2**30:.0f} GiB per case, "
                f"this machine has {memory / 2**30:.0f} GiB; choose a smaller grid"
            )
        if self.source == "synthetic" and self.synthetic < 1:
            raise ValueError(f"synthetic: the number of skulls must be >= 1, got {self.synthetic}")
        if self.axial_slices is not None and self.axial_slices < 2:
            raise ValueError(f"axial_slices: must be >= 2, got {self.axial_slices}")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.nnunet_label not in ("auto", "implant", "complete"):
            raise ValueError(f"nnunet_label: one of auto, implant, complete, got {self.nnunet_label!r}")


@dataclass
class PrepareResult:
    manifest: Path
    prepared: int
    reused: int
    skipped: list[Skip] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.prepared + self.reused > 0


def _settings(opts: PrepareOptions) -> dict:
    """The options that shape a case's volumes; a finished case is reused only if they are unchanged."""
    keys: tuple[str, ...] = ("grid", "axial_slices", "keep_largest", "input_kind", "threshold", "synthetic_shape", "mandible")
    keys += ("refine_data",)
    keys += ("nnunet_label",) if opts.source == "nnunet" else ()  # other sources' finished cases keep their records
    return json.loads(json.dumps({k: getattr(opts, k) for k in keys}))


def _case_seed(seed: int, case_id: str) -> int:
    return zlib.crc32(f"{seed}:{case_id}".encode())


def _split_skulls(skulls: list[str], opts: PrepareOptions, every: list[str]) -> dict[str, str]:
    named = {s: "eval1" for s in opts.eval1} | {s: "eval2" for s in opts.eval2}
    unknown = sorted(set(named) - set(every))
    if unknown:
        raise ValueError(f"--eval1/--eval2 name skulls that are not in the dataset: {', '.join(unknown)} (known: {', '.join(every[:20])})")
    rest = [s for s in skulls if s not in named]
    rng = np.random.default_rng(opts.seed)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    n = len(rest)
    n_eval = 0 if named else (round(opts.eval_fraction * n) or int(n >= 3 and opts.eval_fraction > 0))
    n_val = round(opts.val_fraction * n) or int(n >= 3 and opts.val_fraction > 0)
    roles = {s: "eval" for s in rest[:n_eval]} | {s: "val" for s in rest[n_eval : n_eval + n_val]}
    roles |= {s: "train" for s in rest[n_eval + n_val :]}
    return roles | named


def assign_roles(cases: list[SourceCase], opts: PrepareOptions) -> tuple[list[SourceCase], list[Skip]]:
    """Give every case a role (splitting by skull, never across roles) and expand generated defects."""
    skulls = sorted({c.skull for c in cases if c.role is None})
    by_skull = _split_skulls(skulls, opts, sorted({c.skull for c in cases}))
    named = set(opts.eval1) | set(opts.eval2)
    out, excluded = [], []
    shift: tuple[str, ...] = opts.shift_defects or ()  # set by PrepareOptions
    for case in cases:
        # a skull the user names goes where they say; every skull of a case without a role was split
        skull_role = by_skull[case.skull] if case.skull in named else case.role or by_skull[case.skull]
        if case.defective is None:
            kinds = {
                "train": [("train", k) for k in opts.defects],
                "val": [("val", k) for k in opts.defects],
                "eval": [("eval1", k) for k in opts.defects] + [("eval2", k) for k in shift],
                "eval1": [("eval1", k) for k in opts.defects],
                "eval2": [("eval2", k) for k in (shift or opts.defects)],
            }[skull_role]
            for role, kind in kinds:
                cid = f"{case.case_id}_{kind}"
                out.append(replace(case, case_id=cid, defect=kind, role=role, seed=_case_seed(opts.seed, cid)))
            continue
        shifted = case.defect in shift
        if skull_role == "eval":
            role = "eval2" if shifted else "eval1"
        elif skull_role in ("eval1", "eval2"):
            role = skull_role
        elif shifted:
            excluded.append(Skip(case.case_id, f"defect type {case.defect} is held out for eval2, skull {case.skull} is {skull_role}"))
            continue
        else:
            role = skull_role
        out.append(replace(case, role=role, seed=_case_seed(opts.seed, case.case_id)))
    return out, excluded


def _read_mask(path: Path, layout: Layout, opts: PrepareOptions, largest: bool) -> np.ndarray:
    image = read_image(path)
    mismatch = Geometry.of(image).mismatch(layout.original)
    if mismatch:
        raise VolumeError(f"{path}: {mismatch}, its partner's; the pair must share one grid")
    mask = binarize(layout.canonical_array(image), opts.input_kind, opts.threshold, str(path), layout.canonical.spacing)
    return largest_component(mask) if largest else mask


def _source_image(case: SourceCase, opts: PrepareOptions):
    if case.synthetic_seed is not None:
        shape = opts.synthetic_shape or opts.grid
        mask, spacing, origin = synthetic_skull(case.synthetic_seed, shape, mandible=opts.mandible)
        return from_array(mask.astype(np.uint8), Geometry(int3(shape), float3(spacing), float3(origin), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    path = case.complete if case.complete is not None else case.defective
    assert path is not None  # discover() gives every file case a complete or a defective skull
    return read_image(path)


def _labelled(case: SourceCase, layout: Layout, opts: PrepareOptions) -> np.ndarray:
    """The defective skull plus every voxel its label file names (the completed skull)."""
    labels = case.labels
    assert labels is not None and case.defective is not None  # only nnU-Net cases come here
    image = read_image(labels.path)
    mismatch = Geometry.of(image).mismatch(layout.original)
    if mismatch:
        raise VolumeError(f"{labels.path}: {mismatch}, its image's; an nnU-Net label must share its image's grid")
    array = layout.canonical_array(image)
    unknown = np.setdiff1d(np.unique(array), (0, *labels.values))
    if unknown.size:
        raise VolumeError(f"{labels.path}: values {unknown[:6].tolist()} are not labels of dataset.json; fix the label or dataset.json")
    return _read_mask(case.defective, layout, opts, opts.keep_largest) | np.isin(array, labels.values)


def load_complete(case: SourceCase, opts: PrepareOptions) -> tuple[Layout, np.ndarray, dict]:
    """The case's layout, its canonical complete skull, and the record of its source."""
    image = _source_image(case, opts)
    layout = Layout.plan(image, opts.grid, opts.axial_slices)
    if case.synthetic_seed is not None:
        return layout, layout.canonical_array(image).astype(bool), {"synthetic_seed": case.synthetic_seed}
    source = {k: str(getattr(case, k)) for k in KINDS if getattr(case, k) is not None}
    if case.labels is not None:
        complete = _labelled(case, layout, opts)
        source["label"] = str(case.labels.path)
    else:
        complete = binarize(layout.canonical_array(image), opts.input_kind, opts.threshold, str(case.complete), layout.canonical.spacing)
    complete = largest_component(complete) if opts.keep_largest else complete
    return layout, complete, source


def grid_partition(layout: Layout, defective: np.ndarray, implant: np.ndarray) -> dict[str, np.ndarray]:
    """Defective, complete and implant on the grid, with defective + implant = complete exactly and disjoint
    (resizing each on its own leaves rim voxels in neither or in both). The defective skull is the network's
    input, so it is resized as it is; the implant loses what the defective skull already holds."""
    grid_defective = layout.to_grid(defective)
    grid_implant = layout.to_grid(implant) & ~grid_defective
    return {"defective": grid_defective, "complete": grid_defective | grid_implant, "implant": grid_implant}


def process_case(case: SourceCase, opts: PrepareOptions, loaded: tuple | None = None) -> dict:
    """Prepare one case and write its volumes and record; returns the record.

    ``loaded`` is :func:`load_complete`'s result when another case of the same skull already has it.

    Raises:
        VolumeError, DefectError: the case cannot be prepared (the message names the file).
    """
    layout, complete, source = loaded or load_complete(case, opts)
    record: dict[str, Any] = {"id": case.case_id, "skull": case.skull, "role": case.role, "defect": case.defect, "seed": case.seed}
    record["source"] = source
    if case.defective is None:
        assert case.defect is not None  # assign_roles names the defect to generate
        defect = make_defect(complete, layout.canonical.spacing, case.defect, case.seed)
        implant = complete & defect.region
        defective = complete & ~defect.region
        record["defect_attempts"] = defect.attempts
    else:
        defective = _read_mask(case.defective, layout, opts, opts.keep_largest)
        implant = _read_mask(case.implant, layout, opts, False) if case.implant is not None else complete & ~defective
    if not implant.any():
        raise VolumeError(f"{case.implant or case.defective}: the implant is empty (defective equals complete); check the pair")
    record["removed_fraction"] = float(implant.sum() / complete.sum())
    volumes = {"defective": defective, "complete": complete, "implant": implant}
    grid_geometry = layout.grid_geometry()
    record["grid"] = {}
    for kind, mask in grid_partition(layout, defective, implant).items():
        rel = f"grid/{case.case_id}_{kind}.nii.gz"
        write_image(from_array(mask, grid_geometry), opts.output / rel)
        record["grid"][kind] = rel
    if case.role in ("eval1", "eval2") or opts.refine_data:
        record["original"] = {}
        for kind, mask in volumes.items():
            rel = f"original/{case.case_id}_{kind}.nii.gz"
            write_image(layout.to_original(mask), opts.output / rel)
            record["original"][kind] = rel
    record["grid_spacing"] = list(grid_geometry.spacing)
    record["layout"] = layout.to_dict()
    record["settings"] = _settings(opts)
    atomic_write_text(opts.output / "cases" / f"{case.case_id}.json", json.dumps(record, indent=1))
    return record


def _finished(case: SourceCase, opts: PrepareOptions) -> dict | None:
    path = opts.output / "cases" / f"{case.case_id}.json"
    if opts.force or not path.is_file():
        return None
    try:
        record = read_json(path)
        files = [*record.get("grid", {}).values(), *record.get("original", {}).values()]
    except (ValueError, AttributeError):  # a damaged record: the case is prepared again
        return None
    same = (record.get("role"), record.get("defect"), record.get("seed"), record.get("settings")) == (
        case.role,
        case.defect,
        case.seed,
        _settings(opts),
    )
    return record if same and all((opts.output / f).is_file() for f in files) else None


def _source_key(case: SourceCase):
    """Cases with one key share one loaded complete skull."""
    return (case.synthetic_seed, str(case.complete), str(case.labels.path) if case.labels else None)


def _skip(case: SourceCase, error: Exception) -> Skip:
    if isinstance(error, (VolumeError, DefectError)):
        return Skip(case.case_id, str(error))
    return Skip(case.case_id, f"unexpected {type(error).__name__}: {error}")


def _work(args: tuple[list[SourceCase], PrepareOptions]) -> list[tuple[dict | None, Skip | None]]:
    """Prepare the cases of one source skull, loading (or synthesizing) it once; one bad case never stops the
    others, and a skull that cannot be loaded is read once and reported for each of its cases."""
    group, opts = args
    try:
        loaded = load_complete(group[0], opts)
    except Exception as e:  # reported and recorded per case, like any other failure
        return [(None, _skip(case, e)) for case in group]
    out: list[tuple[dict | None, Skip | None]] = []
    for case in group:
        try:
            out.append((process_case(case, opts, loaded), None))
        except Exception as e:
            out.append((None, _skip(case, e)))
    return out


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def prepare(opts: PrepareOptions) -> PrepareResult:
    """Prepare a dataset folder (see :mod:`data_prep.manifest` for its layout) and return a summary.

    Inputs that cannot be used are reported one line each (file and reason), recorded under ``skipped``
    in the manifest, and every other case is still prepared.

    Raises:
        FolderError: the output folder is a file, not writable, or in use by another process.
    """
    with claim(opts.output, "prepare"):
        return _prepare(opts)


def _prepare(opts: PrepareOptions) -> PrepareResult:
    start = time.perf_counter()
    found, skipped = discover(opts.source, opts.path, opts.synthetic, opts.seed, opts.nnunet_label)
    cases, excluded = assign_roles(found, opts)
    for skip in skipped:
        log.warning("skipped %s: %s", skip.file, skip.reason)
    records, todo = [], []
    for case in cases:
        done = _finished(case, opts)
        (records.append(done) if done is not None else todo.append(case))
    reused = len(records)
    groups: dict = {}
    for case in todo:
        groups.setdefault(_source_key(case), []).append(case)
    jobs = [(g, opts) for g in groups.values()]
    results = [
        r
        for batch in run_jobs(
            _work, jobs, opts.workers, desc="prepare", total=len(todo), count=len, initializer=_init_worker, quiet=opts.quiet
        )
        for r in batch
    ]
    for record, problem in results:
        if problem is not None:
            log.warning("skipped %s: %s", problem.file, problem.reason)
            skipped.append(problem)
        elif record is not None:
            records.append(record)
    manifest = Manifest(
        opts.output / "manifest.json",
        {
            "format": FORMAT,
            "grid": list(opts.grid),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "cases": sorted(records, key=lambda r: r["id"]),
            "skipped": [s.to_dict() for s in skipped],
            "excluded": [s.to_dict() for s in excluded],
        },
    )
    manifest.save()
    result = PrepareResult(manifest.path, len(records) - reused, reused, skipped, time.perf_counter() - start)
    counts = {r: len(manifest.role(r)) for r in ROLES}
    empty = [r for r, n in counts.items() if n == 0]
    if empty and result.ok:
        log.warning(
            "no %s cases in %s: adjust --val-fraction/--eval-fraction or name --eval1/--eval2 skulls if you need them",
            " or ".join(empty),
            manifest.path,
        )
    log.info(
        "prepared %d cases, reused %d, skipped %d (%s) in %.1f s -> %s",
        result.prepared,
        reused,
        len(skipped),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        result.seconds,
        manifest.path,
    )
    return result
