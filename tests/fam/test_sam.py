"""SAM: one step equals the hand-derived update w - lr * grad L(w + rho g / ||g||)."""

import pytest
import torch

from fam_skull.fam.sam import SAM
from fam_skull.train.step import Stepper


def test_sam_step_matches_the_definition():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    loss_fn = torch.nn.MSELoss()
    params = list(model.parameters())
    w = [p.detach().clone() for p in params]
    g = torch.autograd.grad(loss_fn(model(x), y), params)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(0.05 * gi / norm)
    g2 = torch.autograd.grad(loss_fn(model(x), y), params)
    expected = [wi - 0.1 * gi for wi, gi in zip(w, g2)]
    with torch.no_grad():
        for p, wi in zip(params, w):
            p.copy_(wi)
    step = Stepper(model, loss_fn, torch.optim.SGD(params, lr=0.1), "sam", sam_rho=0.05)
    result = step(x, y)
    assert not result.skipped
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_rho_must_be_positive():
    with pytest.raises(ValueError, match="rho"):
        SAM(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), rho=0.0)
