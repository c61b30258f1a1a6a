"""An exported run, run by MONAI's own bundle runner in a subprocess, predicts what fam-skull predict does."""

import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk
from helpers import write_volume

from data_prep.defects import make_defect
from fam_skull.cli import main


def test_monai_bundle_run_equals_fam_skull_predict(tmp_path, skulls, trained_run):
    inputs = tmp_path / "skulls"
    for i, (mask, spacing) in enumerate(skulls[:2]):
        defective = mask & ~make_defect(mask, spacing, "sphere", seed=i).region
        direction = (1, 0, 0, 0, -1, 0, 0, 0, 1) if i else None  # one flipped scan: the geometry must come back
        write_volume(inputs / f"scan {i}.nii.gz", defective.astype(np.uint8), spacing, origin=(10.0, -4.0, 3.0), direction=direction)
    bundle = tmp_path / "bundle"
    assert main(["export", str(trained_run), str(bundle), "--min-component-mm3", "0", "--quiet"]) == 0
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32, 16]
    assert inference["network_def"]["_target_"] == "monai.networks.nets.UNet"
    out = tmp_path / "bundle_out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--input_dir",
            str(inputs),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ref = tmp_path / "predict_out"
    assert (
        main(
            [
                "predict",
                "--run",
                str(trained_run),
                "--files",
                *map(str, sorted(inputs.iterdir())),
                "--output",
                str(ref),
                "--min-component-mm3",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == ["scan_0_complete.nii.gz", "scan_0_implant.nii.gz", "scan_1_complete.nii.gz", "scan_1_implant.nii.gz"]
    for name in names:
        a, b = sitk.ReadImage(str(out / name)), sitk.ReadImage(str(ref / name))
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)), name
        assert (a.GetOrigin(), a.GetSpacing(), a.GetDirection()) == (b.GetOrigin(), b.GetSpacing(), b.GetDirection()), name
    assert sitk.ReadImage(str(out / "scan_1_implant.nii.gz")).GetDirection() == (1, 0, 0, 0, -1, 0, 0, 0, 1)
