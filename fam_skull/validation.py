"""What training validates on: implant scores of a coarse network over the validation cases, on the grid."""

from __future__ import annotations

import numpy as np
import torch

from fam_skull.data import Cases
from fam_skull.metrics import implant_scores
from fam_skull.models import implant_mask


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds: Cases, device: torch.device) -> dict:
    """Mean implant DSC, implant HD95 (mm) and completed-skull DSC over the validation cases, on the grid.

    The implant is :func:`~fam_skull.models.implant_mask` of the output; a missed implant scores DSC 0 and
    the grid's diagonal as HD95 (the evaluation's default policy), so it always lowers the mean.
    """
    model.eval()
    rows = []
    for i in range(len(val_ds)):
        item = val_ds[i]
        defective = item["image"][None].to(device)
        implant = implant_mask(model(defective), defective)[0, 0].cpu().numpy()
        rows.append(implant_scores(implant, item["implant"][0].numpy() > 0.5, item["image"][0].numpy() > 0.5, item["spacing"].numpy()))
    return {f"val_{key}": float(np.mean([r[key] for r in rows])) for key in rows[0]}
