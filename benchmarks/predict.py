"""Inference cost of both stages on a 512x512x256 scan on this machine's CPU cores: a synthetic skull with a
bilateral defect, written as NRRD, through ``fam-skull predict --files`` (read, binarize, largest component,
coarse network on the grid, box, sliding-window refinement, paste back, write), coarse stage alone beside it.

    python benchmarks/predict.py --run runs/synthetic_1mm/runs/<arm>_refined_s0

``--run`` is a refinement run (its config names the coarse run). Each stage runs in a forked child, so the
peak memory is its own.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _isolated import isolated

from data_prep.defects import make_defect
from data_prep.io import Geometry, from_array, write_image
from data_prep.phantom import synthetic_skull
from fam_skull.predict import PredictOptions, predict


def _predict(run: Path, scan: Path, output: Path, stage: str) -> int:
    result = predict(PredictOptions(run=run, output=output, files=[scan], stage=stage, device="cpu", quiet=True))
    if result.failed:
        raise RuntimeError(result.failed)
    return result.predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a refinement run folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shape, fov = (512, 512, 256), (230.0, 230.0, 200.0)
        mask, spacing, origin = synthetic_skull(7, shape, fov=fov)
        defective = mask & ~make_defect(mask, spacing, "bilateral", 3).region
        write_image(
            from_array(defective.astype(np.uint8), Geometry(shape, spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1))), tmp / "scan.nrrd"
        )
        rows = []
        for stage in ("coarse", "refined"):
            seconds, peak, _ = isolated(_predict, args.run, tmp / "scan.nrrd", tmp / stage, stage)
            rows.append((stage, seconds, peak))
    print(
        f"512x512x256 scan ({spacing[0]:.3f} x {spacing[1]:.3f} x {spacing[2]:.3f} mm), {args.threads} threads, torch {torch.__version__}"
    )
    print("| stage | seconds | peak MiB | target |")
    print("|---|---|---|---|")
    for stage, seconds, peak in rows:
        print(f"| {stage} | {seconds:.1f} | {peak:.0f} | {'<= 60 s, <= 4096 MiB' if stage == 'refined' else ''} |")


if __name__ == "__main__":
    main()
