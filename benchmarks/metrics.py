"""fam_skull.metrics next to medpy (the AutoImplant evaluation): dc + hd + hd95 on 512x512x256 volumes.

Each call runs in a forked child, so the peak memory is its own.

    python benchmarks/metrics.py
"""

from __future__ import annotations

import numpy as np
from _isolated import isolated
from medpy.metric import binary

from data_prep.defects import make_defect
from data_prep.phantom import synthetic_skull
from fam_skull.metrics import compute_metrics


def _medpy(a, b, spacing):
    return {"dsc": binary.dc(a, b), "hd": binary.hd(a, b, spacing), "hd95": binary.hd95(a, b, spacing)}


def _ours(a, b, spacing):
    m = compute_metrics(a, b, spacing)
    return {k: m[k] for k in ("dsc", "hd", "hd95")}


def main() -> None:
    shape = (512, 512, 256)
    skull, spacing, _ = synthetic_skull(0, shape, fov=(230.0, 230.0, 200.0))
    other, _, _ = synthetic_skull(1, shape, fov=(230.0, 230.0, 200.0))
    region = make_defect(skull, spacing, "sphere", seed=0).region
    implant = skull & region
    shifted = np.roll(implant, 2, axis=0) | np.roll(implant, 1, axis=2)
    # a completion model's typical output: the defective skull kept, the implant region approximate
    completed = (skull & ~region) | shifted
    pairs = {
        "skull pair (completed vs complete)": (completed, skull),
        "skull pair (two different skulls, worst case)": (other, skull),
        "small implant": (shifted, implant),
    }
    print(f"{shape[0]}x{shape[1]}x{shape[2]}, spacing {tuple(round(s, 3) for s in spacing)} mm; implant {int(implant.sum())} voxels")
    print("| volume pair | medpy s | ours s | speed-up | medpy peak MiB | ours peak MiB | memory ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (a, b) in pairs.items():
        t_m, m_m, ref = isolated(_medpy, a, b, spacing)
        t_o, m_o, got = isolated(_ours, a, b, spacing)
        diff = max(abs(ref[k] - got[k]) for k in ref)
        print(f"| {name} | {t_m:.2f} | {t_o:.3f} | {t_m / t_o:.0f}x | {m_m:.0f} | {m_o:.0f} | {m_m / max(m_o, 1):.0f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
