"""Training throughput at 64x64x32 with the real trainer (MONAI CacheDataset + DataLoader): steps per second
for baseline, FAM and SAM, and the share of step time spent waiting on data.

Model: MONAI UNet channels (8,16,32,64), strides (2,2,2), 2 residual units, batch 2, CPU, with the default
augmentation (fresh defects, flips). Each method trains 2 epochs on the same prepared synthetic dataset, once per
``--workers`` setting (``data.num_workers``); the second epoch's numbers are reported.

    python benchmarks/train_throughput.py [--threads 2] [--workers 0 1]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from data_prep.manifest import Manifest
from data_prep.prepare import PrepareOptions, prepare
from fam_skull.config import load_config
from fam_skull.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers settings to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = prepare(PrepareOptions(tmp / "data", synthetic=6, grid=(64, 64, 32), val_fraction=0.0, eval_fraction=0.0, quiet=True))
        cases = len(Manifest.load(result.manifest).role("train"))
        rows = {}
        for workers in args.workers:
            for method in ("baseline", "fam", "sam"):
                out = tmp / f"{method}_{workers}"
                cfg = load_config(
                    base={
                        "method": method,
                        "output": str(out),
                        "data": {"manifest": str(result.manifest), "batch_size": 2, "num_workers": workers},
                        "model": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 2},
                        "train": {"epochs": 2, "save_epochs": [], "threads": args.threads},
                    }
                )
                train(cfg, quiet=True)
                with open(out / "metrics.csv") as f:
                    rows[(method, workers)] = list(csv.DictReader(f))[-1]
    print(f"64x64x32, batch 2, {args.threads} threads; {cases} training cases, default augmentation, epoch 2 of 2")
    print("| method | DataLoader workers | steps/s | step time x baseline | waiting on data |")
    print("|---|---|---|---|---|")
    for (method, workers), row in rows.items():
        t, base = float(row["step_time"]), float(rows[("baseline", workers)]["step_time"])
        print(f"| {method} | {workers} | {1 / t:.2f} | {t / base:.2f}x | {100 * float(row['data_wait_share']):.1f}% |")


if __name__ == "__main__":
    main()
