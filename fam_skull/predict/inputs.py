"""What ``predict`` reads: a manifest's cases or defective skull files, each as the network sees it (its grid mask),
its :class:`~data_prep.preprocess.Layout` and its canonical mask at the scan's resolution."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from data_prep.io import read_image, to_array
from data_prep.manifest import Manifest
from data_prep.preprocess import BONE_HU, Layout, binarize, largest_component
from data_prep.sources import safe_id, stem, volumes

Loaded = tuple[np.ndarray, Layout, np.ndarray]  # grid defective skull, layout, canonical defective skull


@dataclass
class CaseInput:
    """One case to predict: its id, where it came from, ``load()`` (read only when it is predicted) and ``stamp``
    (its input files' sizes and modification times: a prediction is reused only for the input it was made from)."""

    id: str
    source: str
    load: Callable[[], Loaded]
    stamp: str


def stamp(paths: Sequence[Path]) -> str:
    """Sizes and modification times (ns) of ``paths``, a folder standing for the files in it."""
    files = [f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists())


def load_file(path: Path, grid: Sequence[int], input_kind: str = "auto", threshold: float = BONE_HU) -> Loaded:
    """A defective skull file as the network sees it: its grid mask, its Layout and its canonical mask at the
    scan's resolution (binarized as ``prepare`` does, largest component kept).

    Raises:
        VolumeError: the file cannot be used (the message names it).
    """
    image = read_image(path)
    layout = Layout.plan(image, grid)
    mask = binarize(layout.canonical_array(image), input_kind, threshold, str(path), layout.canonical.spacing)
    canonical = largest_component(mask)
    return layout.to_grid(canonical), layout, canonical


def _load_manifest_case(manifest: Manifest, case: dict) -> Loaded:
    layout = Layout.from_dict(case["layout"])
    defective_grid = to_array(read_image(manifest.file(case, "grid", "defective"))) != 0
    if "defective" in case.get("original", {}):
        canonical = layout.canonical_array(read_image(manifest.file(case, "original", "defective"))) != 0
    else:  # a grid-only case: its scan-resolution skull is the resampled grid one
        canonical = layout.canonical_from_grid(defective_grid) >= 0.5
    return defective_grid, layout, canonical


def manifest_cases(path: Path, roles: Sequence[str], grid: Sequence[int]) -> list[CaseInput]:
    """The ``roles`` cases of a prepared manifest.

    Raises:
        ManifestError: an unreadable manifest. ValueError: it was prepared on another grid than the run's.
    """
    manifest = Manifest.load(path)
    if tuple(manifest.data["grid"]) != tuple(grid):
        raise ValueError(
            f"{manifest.path}: grid {manifest.data['grid']} differs from the run's {list(grid)}; prepare the data on the run's grid"
        )
    cases = manifest.role(*roles)
    return [CaseInput(c["id"], c["id"], partial(_load_manifest_case, manifest, c), stamp(_manifest_files(manifest, c))) for c in cases]


def _manifest_files(manifest: Manifest, case: dict) -> list[Path]:
    files = [manifest.file(case, "grid", "defective")]
    return files + ([manifest.file(case, "original", "defective")] if "defective" in case.get("original", {}) else [])


def file_cases(paths: Sequence[Path], grid: Sequence[int], input_kind: str = "auto", threshold: float = BONE_HU) -> list[CaseInput]:
    """Defective skull files (any format SimpleITK reads) or DICOM folders, a folder of them standing for the
    volumes in it."""
    files = [f for p in map(Path, paths) for f in (volumes(p) if p.is_dir() else [p])]
    return [CaseInput(safe_id(stem(f)), str(f), partial(load_file, f, grid, input_kind, threshold), stamp([f])) for f in files]
