"""The task loss of a run, from its config (also what ``fam-skull flatness`` differentiates)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss

from fam_skull.config import Config


def build_loss(config: Config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task loss on 2-class softmax outputs with one-hot targets (``loss.name``: Dice, Dice + cross-entropy
    or Dice + focal, MONAI's), times ``loss.weight``."""
    cls = {"dice": DiceLoss, "dice_ce": DiceCELoss, "dice_focal": DiceFocalLoss}[config.loss.name]
    loss = cls(to_onehot_y=True, softmax=True, include_background=config.loss.include_background, reduction=config.loss.reduction)
    weight = config.loss.weight
    return loss if weight == 1.0 else (lambda outputs, targets: weight * loss(outputs, targets))
