"""The kernels a FAM kappa step spends its time in, with PyTorch's convolutions and with the convolution twins.

The model and data of ``fam_step.py``; two warm-up steps, then ``--steps`` profiled steps per variant; the table
lists the operators with the most self time (device time on CUDA), so a slow path (a convolution whose kernel is
an activation map, a fallback outside cuDNN) shows up by name.

    python benchmarks/fam_profile.py [--device cuda] [--shape 128,128,64] [--steps 2] [--rows 12]
"""

from __future__ import annotations

import argparse

import torch
from fam_step import _data, _stepper
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="64,64,32")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    cuda = args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    for label, variant in (("PyTorch's convolutions", "fam:kappa/1"), ("convolution twins (fam.conv_twins)", "fam:kappa/1/t")):
        x, y = _data(shape, 2, args.device)
        step = _stepper(variant, args.device)
        for _ in range(2):
            step(x, y)
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step(x, y)
            if cuda:
                torch.cuda.synchronize()
        print(f"## FAM kappa step, {label}: batch 2 x {args.shape} on {args.device}, {args.steps} steps")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
