"""nnU-Net's predictions as a fam-skull predictions folder, so ``fam-skull evaluate`` scores them beside fam-skull's.

nnU-Net writes one label map per case (``<nnunet id><ending>``, in its image's geometry). Each becomes
``<id>_implant.nii.gz`` (the implant labels, less what the defective skull already holds: fam-skull's implants are
the same) and ``<id>_complete.nii.gz`` (defective skull plus implant), with fam-skull's case ids when the dataset
came from ``export-nnunet`` (its case list), nnU-Net's ids otherwise. No other post-processing is applied.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.folder import claim
from data_prep.io import Geometry, VolumeError, atomic_write_text, from_array, read_image, to_array, write_image
from data_prep.nnunet import label_values, read_cases_file, read_dataset_json
from data_prep.preprocess import binarize
from data_prep.sources import safe_id
from fam_skull.common.paths import PredictionFolder

log = logging.getLogger("fam_skull.predict")


@dataclass
class ImportResult:
    output: Path
    imported: int
    failed: list[dict] = field(default_factory=list)


def _image(dataset: Path, nnunet_id: str, ending: str) -> Path:
    for split in ("Ts", "Tr"):
        path = dataset / f"images{split}" / f"{nnunet_id}_0000{ending}"
        if path.is_file():
            return path
    raise VolumeError(f"no image {nnunet_id}_0000{ending} in {dataset / 'imagesTs'} or imagesTr; predict from this dataset's images")


def import_nnunet(
    predictions: str | Path, dataset: str | Path, output: str | Path, method: str = "nnU-Net", label: str = "auto"
) -> ImportResult:
    """Turn nnU-Net's predictions of ``dataset``'s images into a fam-skull predictions folder; a case that cannot be
    read is recorded in the index and the others go on.

    Raises:
        NnunetError: the dataset's ``dataset.json`` is missing or names no implant label.
        FileNotFoundError: ``predictions`` is not a folder.
    """
    predictions, dataset, output = Path(predictions), Path(dataset), Path(output)
    if not predictions.is_dir():
        raise FileNotFoundError(f"{predictions}: not a folder of nnU-Net predictions")
    info = read_dataset_json(dataset)
    implant_values, _ = label_values(info["labels"], label, str(dataset / "dataset.json"))
    if not implant_values:
        raise ValueError(f"{dataset / 'dataset.json'}: no label is the implant; pass label='implant' if the only label is")
    ending = info["file_ending"]
    names = {nnunet_id: row["id"] for nnunet_id, row in read_cases_file(dataset).items()}
    folder = PredictionFolder(output)
    index: dict = {"method": method, "weights": str(predictions.resolve()), "source": "nnU-Net", "cases": {}, "failed": []}
    with claim(output, "import-nnunet"):
        for path in sorted(p for p in predictions.iterdir() if p.name.endswith(ending)):
            nnunet_id = path.name[: -len(ending)]
            case_id = names.get(nnunet_id, safe_id(nnunet_id))
            try:
                image_path = _image(dataset, nnunet_id, ending)
                image, prediction = read_image(image_path), read_image(path)
                mismatch = Geometry.of(prediction).mismatch(Geometry.of(image))
                if mismatch:
                    raise VolumeError(f"{path}: {mismatch}, its image's; nnU-Net writes predictions in the image's geometry")
                defective = binarize(to_array(image), "auto", name=str(image_path), spacing=image.GetSpacing())
                implant = np.isin(to_array(prediction), implant_values) & ~defective
                files = PredictionFolder.case_files(case_id)
                geometry = Geometry.of(image)
                write_image(from_array((defective | implant).astype(np.uint8), geometry), output / files["complete"])
                write_image(from_array(implant.astype(np.uint8), geometry), output / files["implant"])
                index["cases"][case_id] = {"source": str(path), "files": files, "implant_voxels": int(implant.sum())}
            except (VolumeError, ValueError, RuntimeError) as e:
                log.warning("skipped %s: %s", path, e)
                index["failed"].append({"case": case_id, "reason": str(e)})
        atomic_write_text(folder.index, json.dumps(index, indent=1))
    log.info("imported %d nnU-Net predictions, failed %d -> %s", len(index["cases"]), len(index["failed"]), output)
    return ImportResult(output, len(index["cases"]), index["failed"])
