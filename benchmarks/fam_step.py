"""FAM step cost next to the baseline, SAM, and a re-implementation of the authors' regularizer.

MONAI UNet channels (8,16,32,64), strides (2,2,2), 2 residual units, batch 2 x 1x64x64x32, Dice loss, CPU.
Each variant runs in a forked child, so its peak memory is its own: the peak over building the model, a
warm-up step and the timed steps.

    python benchmarks/fam_step.py [--steps 20] [--repeats 3] [--threads 2]

Variants run in turn, ``--repeats`` rounds; a row reports its fastest round (timings of separate processes on
a shared 2-core machine vary by +-20%; the minimum is the least disturbed) and its largest peak memory.
"""

from __future__ import annotations

import argparse
import time

import torch
from _isolated import isolated
from monai.losses import DiceLoss
from monai.networks.nets import UNet

from fam_skull.flatness import resolve_layer, weight_matrix
from fam_skull.regularizer import FAMRegularizer
from fam_skull.step import Stepper

LAM = 1e-3


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 64, 64, 32, generator=g)
    return x, (x > 0.5).float()


def _model():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2)


class AuthorsStyle:
    """The authors' skull regularizer as published: ||W||_F times a Hutchinson trace of the layer's Hessian
    (Rademacher probes, up to 200, stopping when the running mean changes by < 1e-3 relative), the trace
    wrapped as a constant so only the norm carries a gradient. Kept here only as the cost reference."""

    def __init__(self, model, loss_fn, optimizer, max_iter=200, tol=1e-3):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.weight = resolve_layer(model, "bottleneck").weight
        self.max_iter, self.tol = max_iter, tol
        self.probes: list[int] = []

    def __call__(self, x, y):
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        (g,) = torch.autograd.grad(loss, self.weight, create_graph=True)
        traces, trace = [], 0.0
        for _ in range(self.max_iter):
            v = torch.randint_like(self.weight, 2) * 2 - 1
            (hv,) = torch.autograd.grad(g, self.weight, v, retain_graph=True)
            traces.append((hv * v).sum().item())
            mean = sum(traces) / len(traces)
            if abs(mean - trace) / (abs(trace) + 1e-6) < self.tol:
                break
            trace = mean
        self.probes.append(len(traces))
        reg = torch.linalg.matrix_norm(weight_matrix(self.weight)) * torch.tensor(mean)
        (loss + LAM * reg).backward()
        self.optimizer.step()


def _stepper(variant: str):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    if variant == "authors":
        return AuthorsStyle(model, loss_fn, opt)
    if variant == "authors/200":
        return AuthorsStyle(model, loss_fn, opt, tol=0.0)
    if variant.startswith("fam"):
        every = int(variant.split("/")[1])
        reg = FAMRegularizer(model, lam=LAM, every=every)
        return Stepper(model, loss_fn, opt, "fam", regularizer=reg)
    return Stepper(model, loss_fn, opt, variant, sam_rho=0.05)


def _run(variant: str, steps: int, threads: int):
    torch.set_num_threads(threads)
    x, y = _data()
    step = _stepper(variant)
    step(x, y)  # warm-up: allocator and kernels
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    probes = getattr(step, "probes", [])
    return (time.perf_counter() - start) / steps, sum(probes) / max(len(probes), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (a multiple of 10)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all variants; the fastest is reported")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = [
        ("baseline", "baseline", args.steps),
        ("FAM, 1 probe, every step", "fam/1", args.steps),
        ("FAM, every 5 steps", "fam/5", args.steps),
        ("FAM, every 10 steps", "fam/10", args.steps),
        ("SAM, rho 0.05", "sam", args.steps),
        ("authors-style ||W||_F * Tr(H), their stopping rule", "authors", max(2, args.steps // 10)),
        ("authors-style, all 200 probes", "authors/200", 1),
    ]
    results = {}
    for round_no in range(args.repeats):
        for label, variant, steps in rows:
            if variant == "authors/200" and round_no:
                continue  # ~20 s a step: one round is enough to show the scale
            _, peak, (seconds, probes) = isolated(_run, variant, steps, args.threads)
            old = results.get(label, (float("inf"), 0.0, probes))
            results[label] = (min(old[0], seconds), max(old[1], peak), probes)
    base_t, base_m, _ = results["baseline"]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} timed steps per row, fastest of {args.repeats} rounds")
    print("| variant | s/step | time x baseline | peak step MiB | memory x baseline |")
    print("|---|---|---|---|---|")
    for label, _, _ in rows:
        t, m, _ = results[label]
        print(f"| {label} | {t:.3f} | {t / base_t:.2f}x | {m:.0f} | {m / base_m:.2f}x |")
    fam_t = results["FAM, 1 probe, every step"][0]
    for label, _, _ in rows[-2:]:
        t, _, probes = results[label]
        print(f"{label} / FAM every step: {t / fam_t:.1f}x ({probes:.0f} probes/step)")


if __name__ == "__main__":
    main()
