"""nnU-Net v2 raw datasets, in and out.

In (``prepare --nnunet DATASET``): ``dataset.json`` beside ``imagesTr/<case>_0000<ending>`` and
``labelsTr/<case><ending>`` (optionally ``imagesTs/`` with ``labelsTs/``, or a ``dataset`` key listing the files).
Channel 0000 is the defective skull (a mask or a CT); the label holds the implant, the completed skull, or both,
told apart by the label names in ``dataset.json`` (:data:`IMPLANT_NAMES`, :data:`SKULL_NAMES`) or by
``nnunet_label``. The completed skull is the defective skull plus every labelled voxel, the implant what the
defective skull lacks of it, whichever the label holds.

Out (``export-nnunet MANIFEST OUT``): a prepared dataset's train and val cases at their original resolution as
``imagesTr``/``labelsTr`` (image: the defective skull, label: the implant), the evaluation sets as ``imagesTs`` with
their implants kept aside in ``labelsTs``, ``splits_final.json`` holding fam-skull's own train/val split as fold 0
(nnU-Net's planner copies it to the preprocessed folder), and :data:`CASES_FILE` mapping nnU-Net's case ids back
to fam-skull's (``prepare --nnunet`` reads it back: ids, skulls, defect types and roles survive a round trip).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from data_prep.folder import claim
from data_prep.io import atomic_path, atomic_write_text, read_json
from data_prep.manifest import Manifest
from data_prep.sources import VOLUME_SUFFIXES, Labels, Skip, SourceCase, check_id, safe_id

log = logging.getLogger("fam_skull.nnunet")

IMPLANT_NAMES = ("implant",)
SKULL_NAMES = ("skull", "bone", "complete", "complete_skull", "completed_skull")
LABEL_CHOICES = ("auto", "implant", "complete")
CASES_FILE = "fam_skull_cases.csv"
CASES_COLUMNS = ("nnunet_id", "id", "skull", "role", "defect")
REQUIRED_KEYS = ("channel_names", "labels", "file_ending")
DATASET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_.-]+$")
FILE_ENDING = ".nii.gz"
IMAGE_CHANNEL = "noNorm"  # nnU-Net normalizes a channel by its name: a 0/1 mask is left as it is


class NnunetError(ValueError):
    """A dataset that cannot be read or written as a whole; the message names the file."""


def _values(value, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise NnunetError(f"{where}: label values must be integers or lists of integers, got {value!r}")
    return tuple(values)


def label_values(labels: dict, choice: str, where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The implant values and the skull values of a ``dataset.json`` ``labels`` entry.

    ``choice="auto"`` goes by the names; ``implant`` or ``complete`` reads every foreground label as that.

    Raises:
        NnunetError: no recognizable label name (the names are listed with what to pass instead).
    """
    if choice not in LABEL_CHOICES:
        raise ValueError(f"nnunet_label: one of {', '.join(LABEL_CHOICES)}, got {choice!r}")
    if not isinstance(labels, dict) or not labels:
        raise NnunetError(f"{where}: 'labels' must map label names to values, got {labels!r}")
    foreground = {name: _values(v, where) for name, v in labels.items() if name.casefold() not in ("background", "ignore")}
    foreground = {name: tuple(v for v in values if v != 0) for name, values in foreground.items()}
    if choice != "auto":
        values = tuple(sorted({v for vs in foreground.values() for v in vs}))
        return (values, ()) if choice == "implant" else ((), values)
    implant = tuple(sorted({v for n, vs in foreground.items() if n.casefold() in IMPLANT_NAMES for v in vs}))
    skull = tuple(sorted({v for n, vs in foreground.items() if n.casefold() in SKULL_NAMES for v in vs} - set(implant)))
    if not implant and not skull:
        raise NnunetError(
            f"{where}: none of the labels {sorted(labels)} is named as an implant ({', '.join(IMPLANT_NAMES)}) or a skull "
            f"({', '.join(SKULL_NAMES)}); pass --nnunet-label implant or --nnunet-label complete to say what the label holds"
        )
    return implant, skull


def read_dataset_json(root: Path) -> dict:
    """``root/dataset.json``, checked for what nnU-Net v2 needs.

    Raises:
        NnunetError: missing, unreadable, or lacking a required key (the message names the file and the key).
    """
    path = root / "dataset.json"
    if not path.is_file():
        raise NnunetError(f"{path}: not found; an nnU-Net v2 raw dataset has dataset.json beside imagesTr/ and labelsTr/")
    try:
        data = read_json(path)
    except ValueError as e:
        raise NnunetError(f"{e}; fix dataset.json") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise NnunetError(f"{path}: lacks {', '.join(missing)} (nnU-Net v2 needs {', '.join(REQUIRED_KEYS)}); add them")
    if data["file_ending"] not in VOLUME_SUFFIXES:
        raise NnunetError(f"{path}: file_ending {data['file_ending']!r} is not one of {', '.join(VOLUME_SUFFIXES)}; fix it")
    if not isinstance(data["channel_names"], dict) or not all(str(k).isdigit() for k in data["channel_names"]):
        raise NnunetError(f"{path}: channel_names must map channel numbers to names, got {data['channel_names']!r}")
    return data


def read_cases_file(root: Path) -> dict[str, dict]:
    """A fam-skull export's case list (:data:`CASES_FILE`) by nnU-Net id; empty when the dataset has none."""
    path = root / CASES_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not set(CASES_COLUMNS) <= set(rows[0]):
        raise NnunetError(f"{path}: needs the columns {', '.join(CASES_COLUMNS)}; fix it or remove it")
    return {row["nnunet_id"]: row for row in rows}


def _scan(folder: Path, ending: str, channels: list[int]) -> tuple[dict[str, list[Path]], set[str], list[Skip]]:
    """The images of one folder by case id, each with its channel files in channel order, and every case id seen;
    files that are not ``<case>_XXXX<ending>`` and cases that lack a channel are skipped, one message each."""
    found: dict[str, dict[int, Path]] = {}
    skips = []
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.name.endswith(ending):
            if path.name.endswith(VOLUME_SUFFIXES):
                skips.append(Skip(str(path), f"does not end in dataset.json's file_ending {ending!r}; rename it or fix file_ending"))
            continue
        match = pattern.match(path.name)
        if match is None:
            skips.append(Skip(str(path), f"not named <case>_XXXX{ending} (XXXX: the channel, 0000 for the first); rename it"))
            continue
        found.setdefault(match.group(1), {})[int(match.group(2))] = path
    out = {}
    for case, files in found.items():
        absent = [c for c in channels if c not in files]
        if absent:
            names = ", ".join(f"{case}_{c:04d}{ending}" for c in absent)
            skips.append(
                Skip(str(files[min(files)]), f"channel file {names} is missing (dataset.json names {len(channels)} channels); add it")
            )
            continue
        out[case] = [files[c] for c in channels]
    return out, set(found), skips


def _listed(root: Path, data: dict) -> tuple[dict[str, tuple[Path, Path]], list[Skip]]:
    """The training cases of a ``dataset`` key: image 0 and the label of each, relative to ``root``."""
    cases, skips = {}, []
    for case, entry in data["dataset"].items():
        try:
            image = root / entry["images"][0]
            label = root / entry["label"]
        except (KeyError, IndexError, TypeError):
            skips.append(Skip(f"{root / 'dataset.json'}: dataset.{case}", "needs 'images' (a list) and 'label'; fix the entry"))
            continue
        for path in (image, label):
            if not path.is_file():
                skips.append(Skip(str(path), f"named by dataset.json for case {case} but not found; add it or fix the entry"))
                break
        else:
            cases[case] = (image, label)
    return cases, skips


def nnunet_dataset(root: Path, label: str = "auto") -> tuple[list[SourceCase], list[Skip]]:
    """The labelled cases of an nnU-Net v2 raw dataset (the module docstring says which files) and the inputs
    skipped. Training cases get their roles from the split options; ``imagesTs`` cases with a ``labelsTs`` label
    are evaluation set 1 (``--eval2`` moves them); a fam-skull export's :data:`CASES_FILE` restores ids and roles.

    Raises:
        NnunetError: ``dataset.json`` missing or malformed, or labels that cannot be told apart.
    """
    data = read_dataset_json(root)
    where = str(root / "dataset.json")
    implant, skull = label_values(data["labels"], label, where)
    ending = data["file_ending"]
    channels = sorted(int(k) for k in data["channel_names"])
    mapping = read_cases_file(root)
    skips: list[Skip] = []
    pairs: dict[str, tuple[Path, Path, str | None]] = {}
    if "dataset" in data:
        listed, problems = _listed(root, data)
        skips += problems
        pairs |= {case: (image, lab, None) for case, (image, lab) in listed.items()}
    else:
        for split, role in (("Tr", None), ("Ts", "eval1")):
            images_dir, labels_dir = root / f"images{split}", root / f"labels{split}"
            if not images_dir.is_dir():
                if split == "Tr":
                    raise NnunetError(f"{images_dir}: not found; an nnU-Net v2 raw dataset keeps its training images there")
                continue
            images, seen, problems = _scan(images_dir, ending, channels)
            skips += problems
            for case, files in images.items():
                lab = labels_dir / f"{case}{ending}"
                if lab.is_file():
                    pairs[case] = (files[0], lab, role)
                elif split == "Tr":
                    skips.append(Skip(str(files[0]), f"no label {lab}; add it or remove the image"))
                else:
                    skips.append(
                        Skip(
                            str(files[0]),
                            f"an imagesTs case without a label ({lab}) cannot be trained on or evaluated; "
                            "predict it with 'fam-skull predict --files'",
                        )
                    )
            if labels_dir.is_dir():
                for lab in sorted(labels_dir.iterdir()):
                    name = lab.name[: -len(ending)] if lab.name.endswith(ending) else None
                    if name is not None and name not in seen:
                        image_name = f"images{split}/{name}_0000{ending}"
                        skips.append(Skip(str(lab), f"a label without an image ({image_name}); add the image or remove the label"))
    cases = []
    for case, (image, label_file, role) in sorted(pairs.items()):
        row = mapping.get(case)
        try:
            case_id = check_id(row["id"]) if row else safe_id(case)
        except ValueError as e:
            skips.append(Skip(f"{root / CASES_FILE}: {case}", str(e)))
            continue
        labels = Labels(label_file, implant, skull)
        if row:
            cases.append(
                SourceCase(case_id, safe_id(row["skull"]), None, image, None, row["defect"] or "nnunet", row["role"] or role, labels=labels)
            )
        else:
            cases.append(SourceCase(case_id, case_id, None, image, None, "nnunet", role, labels=labels))
    return cases, skips


@dataclass
class ExportResult:
    dataset: Path
    cases: dict[str, int]
    skipped: list[Skip]


def _dataset_folder(out: Path, dataset_id: int, name: str) -> Path:
    if DATASET_NAME.match(out.name):
        return out
    folder = f"Dataset{dataset_id:03d}_{name}"
    if not 1 <= dataset_id <= 999 or not DATASET_NAME.match(folder):
        raise ValueError(f"dataset_id {dataset_id} and name {name!r}: nnU-Net wants Dataset<three digits>_<name> (id 1-999, a plain name)")
    return out / folder


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target, FILE_ENDING) as tmp:
        shutil.copyfile(source, tmp)


def export_nnunet(manifest: str | Path, output: str | Path, dataset_id: int = 501, name: str = "FamSkull") -> ExportResult:
    """Write a prepared dataset as an nnU-Net v2 raw dataset (the module docstring lists the files).

    ``output`` is the ``nnUNet_raw`` folder (the dataset becomes ``Dataset<id>_<name>`` in it) or, when its name
    already has that form, the dataset folder itself. A case without original-space volumes is skipped with a
    message; the rest are written.

    Raises:
        ManifestError: the manifest cannot be read.
        FolderError: the output folder cannot be written or is in use.
    """
    prepared = Manifest.load(manifest)
    folder = _dataset_folder(Path(output), dataset_id, name)
    order = {"train": 0, "val": 1, "eval1": 2, "eval2": 3}
    cases = sorted(prepared.cases, key=lambda c: (order[c["role"]], c["id"]))
    skipped, rows, counts = [], [], {role: 0 for role in order}
    with claim(folder, "export-nnunet"):
        for number, case in enumerate(cases, start=1):
            nnunet_id = f"skull_{number:04d}"
            split = "Tr" if case["role"] in ("train", "val") else "Ts"
            original = case.get("original") or {}
            if not all((prepared.root / original.get(k, "")).is_file() for k in ("defective", "implant")):
                reason = "has no original-space defective and implant volumes (prepared with --no-refine-data?); prepare it again"
                skipped.append(Skip(case["id"], reason))
                continue
            _copy(prepared.root / original["defective"], folder / f"images{split}" / f"{nnunet_id}_0000{FILE_ENDING}")
            _copy(prepared.root / original["implant"], folder / f"labels{split}" / f"{nnunet_id}{FILE_ENDING}")
            row = {"nnunet_id": nnunet_id, "id": case["id"], "skull": case["skull"], "role": case["role"]}
            rows.append(row | {"defect": case.get("defect") or ""})
            counts[case["role"]] += 1
        splits = [
            {"train": [r["nnunet_id"] for r in rows if r["role"] == "train"], "val": [r["nnunet_id"] for r in rows if r["role"] == "val"]}
        ]
        if not splits[0]["val"]:
            log.warning("%s has no val cases: nnU-Net's fold 0 will validate on nothing; prepare with --val-fraction > 0", prepared.path)
        text = io.StringIO()
        writer = csv.DictWriter(text, CASES_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(folder / CASES_FILE, text.getvalue())
        atomic_write_text(folder / "splits_final.json", json.dumps(splits, indent=1))
        dataset = {
            "channel_names": {"0": IMAGE_CHANNEL},
            "labels": {"background": 0, "implant": 1},
            "numTraining": counts["train"] + counts["val"],
            "file_ending": FILE_ENDING,
            "overwrite_image_reader_writer": "SimpleITKIO",
            "name": folder.name,
            "description": f"fam-skull export of {prepared.path}: image = defective skull (0/1), label = implant",
        }
        atomic_write_text(folder / "dataset.json", json.dumps(dataset, indent=1))
    for skip in skipped:
        log.warning("skipped %s: %s", skip.file, skip.reason)
    log.info("exported %s -> %s", ", ".join(f"{k} {v}" for k, v in counts.items()), folder)
    return ExportResult(folder, counts, skipped)
