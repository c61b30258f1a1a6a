"""Where a FAM kappa step spends its time: forward, gradient graph, Hessian-vector-product graph, final backward.

The model and data of ``fam_step.py`` (MONAI UNet (8,16,32,64), 2 residual units, batch 2 x 1x64x64x32, Dice
loss), one probe. Each phase is timed on its own (mean over the timed steps after warm-up; the fastest of
``--repeats`` rounds, each model in a forked child, as timings on a shared 2-core machine vary by +-15%), next to a baseline
step's forward and backward, for the U-Net as MONAI builds it (PReLU, InstanceNorm) and with its elementwise layers
swapped out (ReLU; no normalization), which shows how much of the third-order cost sits in the convolutions.

    python benchmarks/fam_phases.py [--steps 6] [--repeats 3] [--threads 2] [--shape 64,64,32]
"""

from __future__ import annotations

import argparse
import time

import torch
from _isolated import isolated
from fam_step import _data
from monai.losses import DiceLoss
from monai.networks.nets import UNet

from fam_skull.fam.flatness import _directions, _hvp
from fam_skull.fam.regularizer import FAMRegularizer

VARIANTS = [
    ("MONAI UNet (PReLU, InstanceNorm)", {}),
    ("ReLU instead of PReLU", {"act": "RELU"}),
    ("no normalization", {"norm": None}),
    ("ReLU, no normalization", {"act": "RELU", "norm": None}),
]
PHASES = ("forward", "gradient graph", "HVP graph", "final backward")


def _phases(arguments: dict, shape, steps: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2, **arguments)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    x, y = _data(shape, 2, "cpu")
    reg = FAMRegularizer(model, lam=1e-3, objective="kappa")
    reg(loss_fn, x, y).loss.backward()  # the first step fuses the encoder's norms back
    weight = reg.ref.weight
    totals = dict.fromkeys((*PHASES, "baseline forward", "baseline backward"), 0.0)
    for step in range(steps + 2):
        marks = [time.perf_counter()]
        model.zero_grad()
        loss = loss_fn(model(x), y)
        marks.append(time.perf_counter())
        (grad_w,) = torch.autograd.grad(loss, weight, create_graph=True)
        marks.append(time.perf_counter())
        v = next(_directions(reg.ref, "hutchinson", 1, reg.generator))
        kappa = (_hvp(grad_w, weight, v) * v).sum()
        marks.append(time.perf_counter())
        (loss + 1e-3 * kappa).backward()
        marks.append(time.perf_counter())
        model.zero_grad()
        loss = loss_fn(model(x), y)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        if step >= 2:  # two warm-up steps
            for key, a, b in zip(totals, marks, marks[1:]):  # the baseline forward includes a zero_grad (set to None)
                totals[key] += (b - a) / steps
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", default="64,64,32")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    print(f"torch {torch.__version__}, cpu, {args.threads} threads, batch 2 x {args.shape}, FAM kappa (1 probe), ms per step")
    print("| model | " + " | ".join(PHASES) + " | FAM step | baseline step | FAM x baseline |")
    print("|---|" + "---|" * (len(PHASES) + 3))
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for label, arguments in VARIANTS:
            _, _, t = isolated(_phases, arguments, shape, args.steps, args.threads)
            best[label] = {k: min(v, best.get(label, t)[k]) for k, v in t.items()}
    for label, _ in VARIANTS:
        t = best[label]
        fam = sum(t[p] for p in PHASES)
        base = t["baseline forward"] + t["baseline backward"]
        cells = " | ".join(f"{1000 * t[p]:.0f}" for p in PHASES)
        print(f"| {label} | {cells} | {1000 * fam:.0f} | {1000 * base:.0f} | {fam / base:.2f}x |")


if __name__ == "__main__":
    main()
