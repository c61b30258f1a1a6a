"""Finding the cases of a dataset: SkullBreak, SkullFix, a folder of complete skulls, pairs, or synthetic skulls."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from data_prep.dicom import is_dicom_folder

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SOURCES = ("skullbreak", "skullfix", "complete", "pairs", "nnunet", "synthetic")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Labels:
    """A label file beside a defective skull (nnU-Net's layout): which of its values are the implant and which
    the skull; the completed skull is the defective skull plus both."""

    path: Path
    implant: tuple[int, ...]
    skull: tuple[int, ...]

    @property
    def values(self) -> tuple[int, ...]:
        return self.implant + self.skull


@dataclass
class SourceCase:
    """One case to prepare. ``defect`` is the given defect type, or the type to generate when
    ``defective`` is None. ``role`` is forced by the dataset (SkullFix cases 100-109 are eval2). ``labels``
    gives the completed skull for a ``defective`` skull that has no ``complete`` file."""

    case_id: str
    skull: str
    complete: Path | None = None
    defective: Path | None = None
    implant: Path | None = None
    defect: str | None = None
    role: str | None = None
    synthetic_seed: int | None = None
    seed: int = 0
    labels: Labels | None = None


@dataclass(frozen=True)
class Skip:
    """An input that was not prepared: the file (or case) and why."""

    file: str
    reason: str

    def to_dict(self) -> dict:
        return {"file": self.file, "reason": self.reason}


def safe_id(name: str) -> str:
    """A file-name-safe case id made from ``name``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    return cleaned or "case"


def check_id(case_id: str) -> str:
    """``case_id`` if it is a safe file name.

    Raises:
        ValueError: it could escape the output folder or is not a plain name.
    """
    if not _SAFE.match(case_id) or ".." in case_id:
        raise ValueError(
            f"case id {case_id!r} is not a safe file name (it could escape the output folder); use letters, digits, '.', '_' and '-' only"
        )
    return case_id


def stem(path: Path) -> str:
    """A volume's name without its suffix; a DICOM folder's name."""
    name = path.name
    if path.is_dir():
        return name
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def volumes(folder: Path) -> list[Path]:
    """The volumes directly in ``folder``, sorted by name: volume files, and sub-folders of DICOM slices (one scan
    each); a folder that is itself a DICOM series is that one scan."""
    if is_dicom_folder(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if (p.is_file() and p.name.endswith(VOLUME_SUFFIXES)) or is_dicom_folder(p))


def _partner(folder: Path, name: str) -> Path | None:
    for suffix in VOLUME_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _require(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {what} folder not found")
    return folder


def skullbreak(root: Path) -> tuple[list[SourceCase], list[Skip]]:
    """``complete_skull/NNN``, ``defective_skull/<type>/NNN``, ``implant/<type>/NNN``."""
    complete_dir = _require(root / "complete_skull", "SkullBreak complete_skull")
    cases, skips = [], []
    for defect_dir in sorted(p for p in _require(root / "defective_skull", "SkullBreak defective_skull").iterdir() if p.is_dir()):
        for defective in volumes(defect_dir):
            name = stem(defective)
            complete = _partner(complete_dir, name)
            implant = _partner(root / "implant" / defect_dir.name, name)
            if complete is None:
                skips.append(Skip(str(defective), f"no partner complete_skull/{name}.nrrd; add it or remove this file"))
                continue
            cases.append(SourceCase(safe_id(f"{name}_{defect_dir.name}"), safe_id(name), complete, defective, implant, defect_dir.name))
    return cases, skips


def skullfix(root: Path) -> tuple[list[SourceCase], list[Skip]]:
    """``[training_set/]{complete_skull,defective_skull,implant}/NNN``; cases 100-109 are eval2."""
    base = root / "training_set" if (root / "training_set").is_dir() else root
    complete_dir = _require(base / "complete_skull", "SkullFix complete_skull")
    cases, skips = [], []
    for defective in volumes(_require(base / "defective_skull", "SkullFix defective_skull")):
        name = stem(defective)
        complete = _partner(complete_dir, name)
        if complete is None:
            skips.append(Skip(str(defective), f"no partner complete_skull/{name}.nrrd; add it or remove this file"))
            continue
        role = "eval2" if name.isdigit() and 100 <= int(name) <= 109 else None
        implant = _partner(base / "implant", name)
        cases.append(SourceCase(safe_id(name), safe_id(name), complete, defective, implant, "skullfix", role))
    return cases, skips


def complete_folder(root: Path) -> tuple[list[SourceCase], list[Skip]]:
    """A folder of complete skulls (MUG500+ style); defects are generated."""
    files = volumes(_require(root, "complete skulls"))
    return [SourceCase(safe_id(stem(p)), safe_id(stem(p)), complete=p) for p in files], []


def pairs(path: Path) -> tuple[list[SourceCase], list[Skip]]:
    """A CSV with columns ``defective,complete[,implant][,id]`` (paths relative to the CSV), or a folder with
    ``defective/``, ``complete/`` and optional ``implant/`` matched by file name."""
    cases, skips = [], []
    if path.is_file():
        with open(path, newline="") as f:
            for row_no, row in enumerate(csv.DictReader(f), start=2):
                origin = f"{path}:{row_no}"
                try:
                    files = {k: (path.parent / row[k]).resolve() if row.get(k) else None for k in ("defective", "complete", "implant")}
                    if files["defective"] is None or files["complete"] is None:
                        raise ValueError("needs both 'defective' and 'complete' columns")
                    case_id = check_id(row["id"]) if row.get("id") else safe_id(stem(files["defective"]))
                except ValueError as e:
                    skips.append(Skip(origin, str(e)))
                    continue
                cases.append(SourceCase(case_id, case_id, files["complete"], files["defective"], files["implant"], "given"))
        return cases, skips
    for defective in volumes(_require(path / "defective", "pairs defective")):
        name = stem(defective)
        complete = _partner(path / "complete", name)
        if complete is None:
            skips.append(Skip(str(defective), f"no partner complete/{name}.* ; add it or remove this file"))
            continue
        cases.append(SourceCase(safe_id(name), safe_id(name), complete, defective, _partner(path / "implant", name), "given"))
    return cases, skips


def synthetic(count: int, seed: int) -> tuple[list[SourceCase], list[Skip]]:
    """``count`` synthetic skulls; skull i uses seed ``seed + i``."""
    return [SourceCase(f"synth{i:03d}", f"synth{i:03d}", synthetic_seed=seed + i) for i in range(count)], []


def discover(
    source: str, path: str | Path | None = None, count: int = 0, seed: int = 0, nnunet_label: str = "auto"
) -> tuple[list[SourceCase], list[Skip]]:
    """The cases of a source (one of :data:`SOURCES`) and the inputs skipped while finding them."""
    if source == "synthetic":
        return synthetic(count, seed)
    if path is None:
        raise ValueError(f"source {source!r} needs a path")
    from data_prep.nnunet import nnunet_dataset  # imports this module

    finders = {
        "skullbreak": skullbreak,
        "skullfix": skullfix,
        "complete": complete_folder,
        "pairs": pairs,
        "nnunet": lambda root: nnunet_dataset(root, nnunet_label),
    }
    if source not in finders:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    return _unique(*finders[source](path))


def _unique(cases: list[SourceCase], skips: list[Skip]) -> tuple[list[SourceCase], list[Skip]]:
    """The first case of every id; later ones are skipped with both sources named (two cases with one id would
    write the same files, the last silently winning)."""
    first: dict[str, SourceCase] = {}
    for case in cases:
        if case.case_id not in first:
            first[case.case_id] = case
            continue
        source = case.defective or case.complete
        skips.append(
            Skip(
                str(source),
                f"its case id {case.case_id!r} is already taken by "
                f"{first[case.case_id].defective or first[case.case_id].complete}; rename one of them "
                "(or give the CSV an 'id' column)",
            )
        )
    return list(first.values()), skips
