"""Preparation speed on one core: a 512x512x256 NRRD skull through read, denoise (largest component),
defect, resize to 256x256x128 and write; and a synthetic 256x256x128 skull with five defects.

    python benchmarks/prepare.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.io import Geometry, from_array, write_image
from data_prep.phantom import synthetic_skull
from data_prep.prepare import DEFAULT_DEFECTS, PrepareOptions, load_complete, process_case
from data_prep.sources import SourceCase


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mask, spacing, origin = synthetic_skull(0, (512, 512, 256), fov=(230.0, 230.0, 200.0))
        noise = np.random.default_rng(0).random(mask.shape) > 0.9995  # speckle for the denoiser to remove
        image = from_array((mask | noise).astype(np.uint8), Geometry((512, 512, 256), spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1)))
        write_image(image, tmp / "skull.nrrd")
        opts = PrepareOptions(tmp / "out", "complete", grid=(256, 256, 128), refine_data=False, quiet=True)
        rows = []
        for role in ("train", "eval1"):
            case = SourceCase(f"real_{role}", "real", complete=tmp / "skull.nrrd", defect="bilateral", role=role, seed=1)
            start = time.perf_counter()
            process_case(case, opts)
            rows.append((f"512x512x256 NRRD -> 256x256x128, role {role}", time.perf_counter() - start))
        opts = PrepareOptions(tmp / "synth", "synthetic", grid=(256, 256, 128), quiet=True)
        start = time.perf_counter()
        cases = [SourceCase(f"s_{kind}", "s", defect=kind, role="train", synthetic_seed=0, seed=2) for kind in DEFAULT_DEFECTS]
        loaded = load_complete(cases[0], opts)  # prepare synthesizes a skull once for all its defects
        for case in cases:
            process_case(case, opts, loaded)
        rows.append(("synthetic 256x256x128 skull, five defects (train role)", time.perf_counter() - start))
    print("one thread; 'train' (with --no-refine-data) writes the three grid volumes; 'eval1', like a train case prepared")
    print("for the refinement stage (the default), also the three original-space volumes")
    print("| case | seconds | target |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | <= 10 |")


if __name__ == "__main__":
    main()
