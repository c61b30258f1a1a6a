"""``fam-skull export``: a trained coarse run as a MONAI bundle (Model Zoo layout), run by ``python -m monai.bundle run``.

``fam-skull export RUN OUT`` writes::

    OUT/configs/metadata.json    the network's inputs and outputs, versions, what it was trained on
    OUT/configs/inference.json   network_def (the MONAI UNet/AutoEncoder and its arguments), the weights, and a
                                 FolderPredictor doing what ``fam-skull predict --files`` does
    OUT/models/model.pt          the weights (a state dict of tensors; loaded with weights_only=True)
    OUT/docs/README.md           how to run it

and ``python -m monai.bundle run --config_file OUT/configs/inference.json --bundle_root OUT --input_dir IN
--output_dir PRED`` writes ``<id>_complete.nii.gz`` and ``<id>_implant.nii.gz`` for every volume in ``IN`` (and
``predictions.json``), through the same per-case loop as ``fam-skull predict --run RUN --files IN`` and equal to it
voxel for voxel (tested).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data_prep.folder import claim
from data_prep.io import atomic_path, atomic_write_text, file_stamp
from data_prep.preprocess import BONE_HU
from fam_skull.common.paths import PredictionFolder
from fam_skull.config import Config, method_label
from fam_skull.networks.models import network_spec_from_config
from fam_skull.networks.trained import load_run
from fam_skull.predict.inputs import file_cases
from fam_skull.predict.options import MIN_COMPONENT_MM3
from fam_skull.predict.predictor import Predictor, predict_cases

VERSION = "0.1.0"


class FolderPredictor:
    """Predict every defective skull volume in ``input_dir`` into ``output_dir`` (the bundle's ``run``).

    Args:
        network: the coarse network (built from ``network_def``).
        weights: path of ``models/model.pt``.
        grid: the training grid (x, y, z).
        device: where the network runs.
        min_component_mm3, roi_size, input_kind, threshold: as ``fam-skull predict``'s options.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        weights: str,
        grid,
        input_dir: str,
        output_dir: str,
        device="cpu",
        min_component_mm3: float = MIN_COMPONENT_MM3,
        roi_size=None,
        input_kind: str = "auto",
        threshold: float = BONE_HU,
    ) -> None:
        network = network.to(device).eval()
        network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
        roi = None if roi_size is None else tuple(roi_size)
        self.predictor = Predictor(network, torch.device(device), roi_size=roi, min_component_mm3=min_component_mm3)
        self.weights, self.grid = Path(weights), tuple(grid)
        self.input_dir, self.output_dir = Path(input_dir), Path(output_dir)
        self.input_kind, self.threshold = input_kind, threshold

    def run(self) -> dict:
        """Predict each volume; a file that cannot be used is reported (and recorded in ``predictions.json``) and
        the others go on. Returns ``{id: files}``."""
        if not self.input_dir.is_dir():
            raise FileNotFoundError(f"input_dir {self.input_dir}: not a folder of defective skull volumes")
        with claim(self.output_dir, "bundle run"):
            cases = file_cases([self.input_dir], self.grid, self.input_kind, self.threshold)
            about = {"run": str(self.weights.resolve()), "weights": {"checkpoints": [file_stamp(self.weights)], "stage": "coarse"}}
            predict_cases(self.predictor, cases, self.output_dir, about | {"method": "bundle"}, quiet=True)
            return {k: v["files"] for k, v in PredictionFolder(self.output_dir).read_index()["cases"].items()}


def _metadata(config: Config, grid, checkpoint: Path) -> dict:
    import monai

    target = config.model.target
    return {
        "version": VERSION,
        "changelog": {VERSION: f"exported by fam-skull from {checkpoint}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"fam-skull": _version(), "SimpleITK": _version("SimpleITK")},
        "name": f"fam-skull {target} network ({method_label(config)})",
        "task": "Cranial implant design: the implant that completes a defective skull",
        "description": (
            f"A {config.model.name} trained by fam-skull ({method_label(config)}) on a {list(grid)} grid. The input "
            "volume is binarized, reoriented to LPS, resized to the grid; the implant is the network's foreground "
            "minus the input, resampled back to the input's geometry, small pieces removed."
        ),
        "authors": "fam-skull",
        "copyright": "see the training data's license",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "CT (bone mask)",
                    "num_channels": 1,
                    "spatial_shape": list(grid),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "defective skull"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 2,
                    "spatial_shape": list(grid),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "background", "1": "implant" if target == "implant" else "completed skull"},
                }
            },
        },
    }


def _version(package: str = "fam-skull") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _inference(config: Config, grid, min_component_mm3: float) -> dict:
    spec = network_spec_from_config(config, grid)
    return {
        "imports": ["$import torch", "$import fam_skull.predict.export"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/predictions'",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": spec,
        "network": "$@network_def.to(@device)",
        "predictor": {
            "_target_": "fam_skull.predict.export.FolderPredictor",
            "network": "@network",
            "weights": "$@bundle_root + '/models/model.pt'",
            "grid": list(grid),
            "input_dir": "@input_dir",
            "output_dir": "@output_dir",
            "device": "@device",
            "min_component_mm3": min_component_mm3,
            "roi_size": None,
            "input_kind": "auto",
            "threshold": BONE_HU,
        },
        "run": ["$@predictor.run()"],
    }


def export_bundle(run: str | Path, output: str | Path, checkpoint: str = "best", min_component_mm3: float = MIN_COMPONENT_MM3) -> Path:
    """Write ``run``'s network as a MONAI bundle in ``output`` (layout in the module docstring); returns ``output``.

    Raises:
        ValueError: a refinement run (its bundle would need two networks; export its coarse run).
        ConfigError, CheckpointError: the run cannot be loaded.
        FolderError: the output folder cannot be used.
    """
    model, config, grid, path = load_run(run, checkpoint)
    if config.stage != "coarse":
        raise ValueError(f"{run}: a refinement run needs its coarse run as well; export the coarse run ({config.refine.coarse_run})")
    output = Path(output)
    with claim(output, "export"):
        with atomic_path(output / "models" / "model.pt", ".pt") as tmp:
            torch.save(model.state_dict(), tmp)
        atomic_write_text(output / "configs" / "metadata.json", json.dumps(_metadata(config, grid, path), indent=2))
        atomic_write_text(output / "configs" / "inference.json", json.dumps(_inference(config, grid, min_component_mm3), indent=2))
        atomic_write_text(
            output / "docs" / "README.md",
            (
                f"# {method_label(config)}: fam-skull {config.model.target} network\n\n"
                f"Exported from `{Path(run).resolve()}` ({path.name}). Needs `pip install fam-skull` (the pre- and post-processing).\n\n"
                "    python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\\n"
                "        --input_dir DEFECTIVE_SKULLS --output_dir PREDICTIONS\n\n"
                "writes `<id>_complete.nii.gz` and `<id>_implant.nii.gz` in each input's own geometry.\n"
            ),
        )
    return output
