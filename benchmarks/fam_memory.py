"""Peak memory of one training step against the input size: baseline, each FAM objective and SAM.

The model and step are those of ``fam_step.py`` (MONAI UNet (8,16,32,64), Dice loss). For each shape and batch,
each variant runs a warm-up step and one timed step in a forked child; the peak is the child's resident memory on
the CPU, with glibc returning freed tensors to the system (``_isolated.heap_returns_memory``), and the allocated
device memory on CUDA. A least-squares line peak = a + b * voxels per variant gives the growth
and the extrapolation to the paper's 256x256x128 (batch 1).

    python benchmarks/fam_memory.py [--device cuda] [--shapes 64,64,32 96,96,48 128,128,64] [--batches 1 2]

``fam.chunk 1`` runs the FAM term one sample at a time (each pass backwarded before the next): with batch 1
it is plain FAM, and its peak no longer grows linearly with the batch, so read its fit with that in mind.

``published`` runs 2 trace probes here instead of up to 200: its probes run one after another and free their
graphs, so the peak does not depend on their number, only the time does.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _isolated import heap_returns_memory, isolated
from fam_step import _run

import fam_skull.fam.flatness as flatness

VARIANTS = [
    ("baseline", "baseline"),
    ("FAM kappa", "fam:kappa/1"),
    ("FAM kappa, fam.chunk 1", "fam:kappa/1/c1"),
    ("FAM fisher", "fam:fisher/1"),
    ("FAM fisher, fam.chunk 1", "fam:fisher/1/c1"),
    ("FAM published", "fam:published/1"),
    ("L2 control", "fam:l2/1"),
    ("SAM", "sam"),
]
PAPER = (256, 256, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=["64,64,32", "96,96,48", "128,128,64"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--only", default="", help="comma list of variants (e.g. baseline,fam:kappa/1,fam:kappa/1/c1)")
    args = parser.parse_args()
    if args.device == "cpu":
        heap_returns_memory()
    variants = [v for v in VARIANTS if not args.only or v[1] in args.only.split(",")]
    flatness.PUBLISHED_MAX_PROBES = 2  # inherited by the forked children
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    peaks: dict[tuple, float] = {}
    for shape in shapes:
        for batch in args.batches:
            for _, variant in variants:
                _, rss, (_, device_peak) = isolated(_run, variant, 1, args.threads, args.device, shape, batch)
                peaks[(variant, shape, batch)] = rss if device_peak is None else device_peak
    where = args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"torch {torch.__version__}, {where}: peak MiB of one step (x baseline)")
    columns = [(s, b) for s in shapes for b in args.batches]
    heads = [f"{'x'.join(map(str, s))}, batch {b}" for s, b in columns]
    print("| variant | " + " | ".join(heads) + " | MiB per Mvoxel | 256x256x128, batch 1 (fit) |")
    print("|---|" + "---|" * (len(columns) + 2))
    for label, variant in variants:
        cells = [f"{peaks[(variant, s, b)]:.0f} ({peaks[(variant, s, b)] / peaks[('baseline', s, b)]:.2f}x)" for s, b in columns]
        voxels = np.array([np.prod(s) * b for s, b in columns], dtype=float) / 1e6
        slope, intercept = np.polyfit(voxels, [peaks[(variant, s, b)] for s, b in columns], 1)
        paper = intercept + slope * np.prod(PAPER) / 1e6
        print(f"| {label} | " + " | ".join(cells) + f" | {slope:.0f} | {paper / 1024:.1f} GiB |")


if __name__ == "__main__":
    main()
