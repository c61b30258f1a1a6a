"""A hospital-sized CT through ``fam-skull implant``: a 512x512x256 DICOM series (synthetic head CT with a table,
metal and a defect) -> skull -> both network stages -> mesh -> report, each phase's time and peak memory against
the targets (the whole <= 60 s, <= 4 GiB on 2 CPU cores).

    python benchmarks/implant_pipeline.py --run RUN [--shape 512 512 256] [--output OUT]

RUN is a trained run; a refinement run (``runs/<demo>/runs/baseline_refined_s0``) runs both stages. The scan is
built and written first (not timed). The implant and the skull are scored against the phantom's truth; with
``--output`` the command's files (report.png among them) are kept there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep.defects import make_defect
from data_prep.io import from_array, read_image, to_array
from data_prep.phantom import synthetic_ct
from fam_skull.metrics import compute_metrics, dice
from fam_skull.printing.options import ImplantOptions
from fam_skull.printing.scan import PHASES, implant

TARGET_S, TARGET_MIB = 60.0, 4096.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 256])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="keep the implant's files here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import write_series  # the tests' scanner-like DICOM writer

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        hu, truth, spacing, origin = synthetic_ct(args.seed, tuple(args.shape))
        defect = make_defect(truth, spacing, "bilateral", seed=args.seed)
        hu[defect.region & truth] = 40
        implant_truth, skull_truth = defect.region & truth, truth & ~defect.region
        image = from_array(hu)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        del hu, truth, defect
        folder = write_series(image, Path(tmp) / "dicom")
        built = time.perf_counter() - start
        print(f"scan: {args.shape} voxels of {np.round(spacing, 3).tolist()} mm, {args.shape[2]} DICOM files ({built:.0f} s to build)")
        out = args.output or Path(tmp) / "out"
        result = implant(ImplantOptions(scan=folder, run=args.run, output=out))
        found = to_array(read_image(out / "implant.nii.gz")) != 0
        skull = to_array(read_image(out / "skull_mask.nii.gz")) != 0
    scores = compute_metrics(found, implant_truth, spacing, defective=skull_truth)
    r = result.report
    print(f"{'phase':<10}{'seconds':>10}{'peak MiB':>10}")
    for phase in PHASES:
        print(f"{phase:<10}{r['seconds'][phase]:>10.2f}{r['peak_memory_mib'][phase] or float('nan'):>10.0f}")
    total, peak = sum(r["seconds"].values()), max(v or 0 for v in r["peak_memory_mib"].values())
    print(f"{'total':<10}{total:>10.2f}{peak:>10.0f}")
    print(
        f"ratio to target: time {total / TARGET_S:.2f}x of {TARGET_S:.0f} s, memory {peak / TARGET_MIB:.2f}x of {TARGET_MIB / 1024:.0f} GiB"
    )
    print(
        f"against the phantom: skull DSC {dice(skull, skull_truth):.4f}; implant DSC {scores['dsc']:.4f}, "
        f"boundary DSC {scores['bdsc']:.4f}, HD95 {scores['hd95']:.2f} mm"
    )
    if r["implant"]:
        print(
            f"implant {r['volume_ml']:.1f} ml, {r['triangles']} triangles, watertight {r['watertight']}, "
            f"thickness mean {r['thickness_mm']['mean']:.1f} mm, seam {r['largest_seam_mm']:.1f} mm"
        )


if __name__ == "__main__":
    main()
