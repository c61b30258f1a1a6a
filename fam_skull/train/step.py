"""One optimization step for each method (baseline, FAM, SAM), with the non-finite guard and AMP."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from fam_skull.fam.regularizer import FAMRegularizer
from fam_skull.fam.sam import DEFAULT_RHO, SAM

METHODS = ("baseline", "fam", "sam")


@dataclass
class StepResult:
    """Numbers of one step for logging; ``regularizer`` is the FAM objective's value (kappa, kappa_F, ...; None
    without FAM or when it is off); ``skipped`` when the loss, regularizer or a gradient was not finite."""

    loss: float
    task_loss: float
    regularizer: float | None
    skipped: bool


def _all_ranks(flag: bool, device: torch.device) -> bool:
    """``flag`` on every rank (a rank that skips a step while another does not would hang DDP's all-reduce)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item())


def _finite_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient is finite (a finite loss can still overflow in the backward pass, e.g. a huge
    lambda, and one such step makes every weight NaN). DDP has averaged the gradients, so all ranks agree."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class Stepper:
    """Runs ``model`` one step on a batch with the chosen method.

    Args:
        model: the network (DDP-wrapped under torchrun).
        loss_fn: task loss ``loss_fn(outputs, targets)``.
        optimizer: the base optimizer.
        method: ``"baseline"``, ``"fam"`` or ``"sam"``.
        regularizer: the FAMRegularizer (method ``"fam"``).
        sam_rho: SAM's radius (method ``"sam"``).
        amp: autocast the forward on CUDA; FAM steps run their forward in float32 so the higher-order
            terms are not computed in half precision.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        method: str = "baseline",
        *,
        regularizer: FAMRegularizer | None = None,
        sam_rho: float = DEFAULT_RHO,
        amp: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "fam" and regularizer is None:
            raise ValueError("method 'fam' needs a FAMRegularizer")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.method = method
        self.regularizer = regularizer
        self.sam = SAM(optimizer, sam_rho) if method == "sam" else None
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def _autocast(self, fam_active: bool):
        if self.amp and not fam_active:
            return torch.autocast("cuda")
        return nullcontext()

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepResult:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        reg = self.regularizer if self.method == "fam" else None
        if reg is not None and reg.chunked(inputs.shape[0]):
            # FAM passes over chunks, each backwarded (scaled like the final one) before the training forward
            out = reg.chunked_step(self.loss_fn, inputs, targets, backward=lambda term: self.scaler.scale(term).backward())
            task_loss, loss, kappa = out.task_loss, out.loss, out.kappa
        else:
            with self._autocast(reg is not None and reg.active):
                outputs = self.model(inputs)
                task_loss = self.loss_fn(outputs, targets)
            if reg is not None:
                out = reg.regularize(task_loss, outputs)
                loss, kappa = out.loss, out.kappa
            else:
                loss, kappa = task_loss, None
        values = (loss.item(), task_loss.item(), None if kappa is None else kappa.item())
        if not _all_ranks(all(v is None or math.isfinite(v) for v in values), loss.device):
            return StepResult(*values, skipped=True)
        if self.sam is not None:
            loss.backward()  # unscaled: SAM uses only the direction of this gradient
            self.sam.perturb()
            with self._autocast(False):
                self.scaler.scale(self.loss_fn(self.model(inputs), targets)).backward()
            self.sam.restore()
        else:
            self.scaler.scale(loss).backward()
        if not self.amp and not _finite_gradients(self.optimizer):  # with AMP the scaler skips such steps itself
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(*values, skipped=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepResult(*values, skipped=False)
