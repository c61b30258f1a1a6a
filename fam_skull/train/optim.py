"""The optimizer and learning-rate schedule of a run, from its config."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from fam_skull.config import Config


def build_optimizer(config: Config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def lr_factor(config: Config) -> Callable[[int], float]:
    """The learning-rate multiplier as a closed-form function of the finished epochs, so a resumed (or
    extended) run recomputes it from the current config instead of replaying a chain of updates."""
    epochs, name = config.train.epochs, config.optim.scheduler
    if name == "poly":
        return lambda done: max(1.0 - done / epochs, 0.0) ** 0.9
    if name == "cosine":
        return lambda done: 0.5 * (1.0 + math.cos(math.pi * min(done, epochs) / epochs))
    return lambda done: 1.0
