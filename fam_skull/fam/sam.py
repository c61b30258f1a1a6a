"""Sharpness-Aware Minimization (Foret et al. 2021), the comparison method of the FAM paper."""

from __future__ import annotations

import torch

DEFAULT_RHO = 0.05  # the SAM paper's default radius


class SAM:
    """Two-pass SAM around any optimizer: ``backward``; ``perturb()``; ``backward`` again; ``restore()``; ``step``.

    The optimizer's own state is the only state (checkpoint ``base.state_dict()``). Under
    DistributedDataParallel both backward passes are all-reduced, so every rank perturbs identically.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = DEFAULT_RHO) -> None:
        if rho <= 0:
            raise ValueError(f"SAM rho must be > 0, got {rho}")
        self.base = base
        self.rho = rho
        self._offsets: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.base.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def perturb(self) -> None:
        """Move to w + rho * g / ||g|| using the gradients now in ``.grad``, then clear them."""
        params = self._params()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (norm + 1e-12)
        self._offsets = [(p, p.grad * scale) for p in params]
        for p, e in self._offsets:
            p.add_(e)
        self.base.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Return to w, keeping the gradient computed at the perturbed point."""
        for p, e in self._offsets:
            p.sub_(e)
        self._offsets = []
