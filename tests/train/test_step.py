"""step.py: one optimization step per method; a step whose loss or gradient is not finite changes nothing."""

import math

import torch

from fam_skull.fam.regularizer import FAMRegularizer
from fam_skull.train.step import Stepper


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.InstanceNorm3d(2, affine=True), torch.nn.Conv3d(2, 2, 1))


def _loss(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs, targets[:, 0].long())


def test_baseline_step_is_one_sgd_update():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(2, 1, 4, 4, 4), (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    loss = _loss(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    result = Stepper(model, _loss, torch.optim.SGD(model.parameters(), lr=0.1), "baseline")(x, y)
    assert not result.skipped and result.regularizer is None and abs(result.loss - loss.item()) < 1e-6
    for p, b, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)


def test_a_finite_loss_with_an_overflowing_gradient_is_skipped():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    reg = FAMRegularizer(model, layer="0", lam=1e38, objective="kappa")  # lambda x grad(kappa) overflows; kappa itself may not
    x, y = torch.randn(2, 1, 4, 4, 4), (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    result = Stepper(model, _loss, torch.optim.SGD(model.parameters(), lr=0.1), "fam", regularizer=reg)(x, y)
    # the loss and kappa were finite, so the step was skipped by the gradient check, not the loss check
    assert result.skipped and all(math.isfinite(v) for v in (result.loss, result.task_loss, result.regularizer))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
        assert p.grad is None


def test_a_chunked_fam_step_is_the_same_update():
    x, y = torch.randn(3, 1, 4, 4, 4, dtype=torch.float64), (torch.rand(3, 1, 4, 4, 4) > 0.5).double()
    after, results = [], []
    for chunk in (None, 1):
        model = _model().double()
        reg = FAMRegularizer(model, layer="0", lam=0.1, objective="kappa", seed=5, chunk=chunk)
        results.append(Stepper(model, _loss, torch.optim.SGD(model.parameters(), lr=0.1), "fam", regularizer=reg)(x, y))
        after.append([p.detach().clone() for p in model.parameters()])
    assert not results[1].skipped and results[1].regularizer is not None
    assert abs(results[1].regularizer - results[0].regularizer) <= 1e-9 * abs(results[0].regularizer)
    assert abs(results[1].task_loss - results[0].task_loss) <= 1e-12 and abs(results[1].loss - results[0].loss) <= 1e-9
    assert any(not torch.equal(p, q) for p, q in zip(after[0], _model().double().parameters()))
    for p, q in zip(after[1], after[0]):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
