"""What training validates on, for both stages: mean implant DSC, implant HD95 (mm) and completed-skull DSC over
the validation cases; a missed implant scores DSC 0 and the diagonal as HD95 (the evaluation's default policy),
so it always lowers the mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fam_skull.metrics import implant_scores
from fam_skull.networks.implant import implant_mask, refine_implant
from fam_skull.train.data import Cases


def _means(rows: list[dict]) -> dict:
    return {f"val_{key}": float(np.mean([r[key] for r in rows])) for key in rows[0]}


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds: Cases, device: torch.device) -> dict:
    """The coarse stage, on the training grid."""
    model.eval()
    rows = []
    for i in range(len(val_ds)):
        item = val_ds[i]
        defective = item["image"][None].to(device)
        implant = implant_mask(model(defective), defective)[0, 0].cpu().numpy()
        rows.append(implant_scores(implant, item["implant"][0].numpy() > 0.5, item["image"][0].numpy() > 0.5, item["spacing"].numpy()))
    return _means(rows)


@torch.no_grad()
def validate_refined(model: torch.nn.Module, cases: Cases, patch: Sequence[int], margin_mm: float, device: torch.device) -> dict:
    """The refinement stage, at the scan's resolution (cases from :func:`~fam_skull.train.refine_data.load_cases`)."""
    model.eval()
    rows = []
    for i in range(len(cases)):
        c = cases[i]
        implant = refine_implant(model, c["defective"], c["probability"], c["spacing"], patch, margin_mm, device)
        rows.append(implant_scores(implant, c["implant"], c["defective"], c["spacing"]))
    return _means(rows)
