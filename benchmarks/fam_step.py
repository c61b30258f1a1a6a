"""FAM step cost (each objective) next to the baseline and SAM.

MONAI UNet channels (8,16,32,64), strides (2,2,2), 2 residual units, batch 2 x 1 x SHAPE (default 64x64x32),
Dice loss, on the CPU or a CUDA device. Each variant runs in a forked child, so its peak memory is its own: on
the CPU the peak resident memory over building the model, a warm-up step and the timed steps, on glibc's default
heap (whose fragmentation it includes; ``fam_memory.py`` measures the live tensors); on CUDA the peak memory PyTorch
allocated on the device.

    python benchmarks/fam_step.py [--steps 20] [--repeats 3] [--threads 2] [--device cuda] [--shape 128,128,64] [--batch 2]

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

from fam_skull.fam.regularizer import FAMRegularizer
from fam_skull.train.step import Stepper

LAM = 1e-3


def _data(shape, batch, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, *shape, generator=g)
    return x.to(device), (x > 0.5).float().to(device)


def _model():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2)


def _stepper(variant: str, device):
    model = _model().to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    if variant.startswith("fam"):  # fam:OBJECTIVE/EVERY[/cCHUNK][/t (conv twins)]
        objective, every, *options = variant.split(":")[1].split("/")
        chunk = next((int(o[1:]) for o in options if o.startswith("c")), None)
        reg = FAMRegularizer(model, lam=LAM, every=int(every), objective=objective, chunk=chunk, conv_twins="t" in options)
        return Stepper(model, loss_fn, opt, "fam", regularizer=reg)
    return Stepper(model, loss_fn, opt, variant, sam_rho=0.05)


def _run(variant: str, steps: int, threads: int, device: str, shape, batch: int):
    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    x, y = _data(shape, batch, device)
    step = _stepper(variant, device)
    step(x, y)  # warm-up: allocator and kernels
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return seconds, torch.cuda.max_memory_allocated() / 2**20 if cuda else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (a multiple of 10)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all variants; the fastest is reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--shape", default="64,64,32", help="input volume x,y,z")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--only",
        default="",
        help="comma list of variants to run: baseline, sam, fam:OBJECTIVE/EVERY[/cCHUNK][/t] "
        "(t: convolution twins), e.g. baseline,fam:kappa/1,fam:kappa/1/c1,fam:fisher/1/t",
    )
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    rows = [
        ("baseline", "baseline", args.steps),
        ("FAM kappa, 1 probe, every step", "fam:kappa/1", args.steps),
        ("FAM kappa, every 2 steps", "fam:kappa/2", args.steps),
        ("FAM kappa, every 5 steps", "fam:kappa/5", args.steps),
        ("FAM kappa, every 10 steps", "fam:kappa/10", args.steps),
        ("FAM kappa, every step, in passes of 1 sample (fam.chunk 1)", "fam:kappa/1/c1", args.steps),
        ("FAM kappa, every step, convolution twins (fam.conv_twins)", "fam:kappa/1/t", args.steps),
        ("FAM fisher, 1 probe, every step", "fam:fisher/1", args.steps),
        ("FAM fisher, every 5 steps", "fam:fisher/5", args.steps),
        ("FAM fisher, every step, in passes of 1 sample (fam.chunk 1)", "fam:fisher/1/c1", args.steps),
        ("FAM fisher, every step, convolution twins (fam.conv_twins)", "fam:fisher/1/t", args.steps),
        ("published ||W||_F * Tr(H), every step (probes until the mean settles, <= 200)", "fam:published/1", max(2, args.steps // 10)),
        ("published, every 5 steps", "fam:published/5", args.steps),
        ("L2 on the bottleneck (control)", "fam:l2/1", args.steps),
        ("SAM, rho 0.05", "sam", args.steps),
    ]
    if args.only:
        rows = [r for r in rows if r[1] in args.only.split(",")]
    results = {}
    for _ in range(args.repeats):
        for label, variant, steps in rows:
            _, rss, (seconds, device_peak) = isolated(_run, variant, steps, args.threads, args.device, shape, args.batch)
            peak = rss if device_peak is None else device_peak
            old = results.get(label, (float("inf"), 0.0))
            results[label] = (min(old[0], seconds), max(old[1], peak))
    base_t, base_m = results["baseline"]
    where = args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(
        f"torch {torch.__version__}, {where}, {args.threads} threads, batch {args.batch} x {args.shape}, {args.steps} timed steps per row, "
        f"fastest of {args.repeats} rounds"
    )
    print("| variant | s/step | time x baseline | peak step MiB | memory x baseline |")
    print("|---|---|---|---|---|")
    for label, _, _ in rows:
        t, m = results[label]
        print(f"| {label} | {t:.3f} | {t / base_t:.2f}x | {m:.0f} | {m / base_m:.2f}x |")


if __name__ == "__main__":
    main()
