"""The other FAM objectives: kappa_F of the Gauss-Newton matrix against a materialized Jacobian, the published
regularizer's gradient, and the L2 control."""

import pytest
import torch
from test_flatness import CE, DICE, conv_batch, conv_net, full_hessian, mlp, mlp_batch
from torch import nn
from torch.func import functional_call

from fam_skull.fam.flatness import flatness_of_loss, relative_flatness, resolve_layer
from fam_skull.fam.regularizer import FAMRegularizer


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def brute_fisher(model, param_name, x):
    """kappa_F with J materialized: F = mean over batch and voxels of J^T (diag(p) - p p^T) J."""
    params = dict(model.named_parameters())
    weight = params[param_name].detach()

    def logits_of(w):
        return functional_call(model, {**params, param_name: w}, (x,))

    logits = logits_of(weight).detach()
    jac = torch.autograd.functional.jacobian(logits_of, weight)  # (*logits.shape, *weight.shape)
    c = logits.shape[1]
    jac = jac.movedim(1, -1 - weight.dim()).reshape(-1, c, weight.numel())  # (positions, classes, params)
    p = torch.softmax(logits, 1).movedim(1, -1).reshape(-1, c)
    a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    fisher = torch.einsum("nci,ncd,ndj->ij", jac, a, jac) / jac.shape[0]
    d, m = weight.shape[0], weight[0].numel()
    w = weight.reshape(d, m)
    return torch.einsum("ab,atbt->", w @ w.T, fisher.reshape(d, m, d, m)).item()


@pytest.mark.parametrize("net, batch, loss_fn", [(mlp, mlp_batch, CE), (conv_net, conv_batch, DICE)], ids=["linear", "conv3d"])
def test_exact_fisher_matches_a_materialized_jacobian(net, batch, loss_fn):
    model, (x, y) = net(), batch()
    expected = brute_fisher(model, "0.weight", x)
    got = relative_flatness(model, "0", loss_fn, x, y, estimator="exact", objective="fisher").item()
    assert expected > 1e-6
    assert got == pytest.approx(expected, rel=1e-8)


def test_fisher_equals_kappa_when_logits_are_linear_in_the_weight():
    # logits = W2 tanh(W1 x): linear in W2, and with cross-entropy the Hessian in W2 is the Gauss-Newton matrix
    model, (x, y) = mlp(), mlp_batch()
    kappa = relative_flatness(model, "2", CE, x, y, estimator="exact").item()
    fisher = relative_flatness(model, "2", CE, x, y, estimator="exact", objective="fisher").item()
    assert fisher == pytest.approx(kappa, rel=1e-8)
    # on the first layer (logits not linear in it) they differ
    assert relative_flatness(model, "0", CE, x, y, estimator="exact", objective="fisher").item() != pytest.approx(
        relative_flatness(model, "0", CE, x, y, estimator="exact").item(), rel=1e-3
    )


def test_fisher_is_invariant_to_layer_rescaling():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = mlp_batch()
    before = relative_flatness(model, "0", CE, x, y, estimator="exact", objective="fisher").item()
    alpha = 7.0
    with torch.no_grad():
        model[0].weight.mul_(alpha)
        model[0].bias.mul_(alpha)
        model[2].weight.div_(alpha)
    after = relative_flatness(model, "0", CE, x, y, estimator="exact", objective="fisher").item()
    assert after == pytest.approx(before, rel=1e-8)


@pytest.mark.parametrize("net, batch, loss_fn", [(mlp, mlp_batch, CE), (conv_net, conv_batch, DICE)], ids=["WZ", "LG"])
def test_hutchinson_fisher_is_unbiased_nonnegative_and_so_is_its_gradient(net, batch, loss_fn):
    model, (x, y) = net(), batch()
    ref = resolve_layer(model, "0")
    params = list(model.parameters())
    outputs = model(x)
    loss = loss_fn(outputs, y)
    exact = flatness_of_loss(loss, ref, estimator="exact", objective="fisher", outputs=outputs)
    exact_grad = torch.cat([g.flatten() for g in torch.autograd.grad(exact, params, retain_graph=True)])
    gen = torch.Generator().manual_seed(3)
    n = 400
    values, grads = [], []
    for _ in range(n):
        s = flatness_of_loss(loss, ref, generator=gen, objective="fisher", outputs=outputs)
        values.append(s.item())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(s, params, retain_graph=True)]))
    values = torch.tensor(values)
    assert values.min() >= 0  # each sample is a quadratic form of a positive semi-definite matrix
    assert abs(values.mean() - exact.item()) <= 4 * values.std() / n**0.5
    assert torch.nn.functional.cosine_similarity(torch.stack(grads).mean(0), exact_grad, dim=0) >= 0.99


def test_fisher_is_never_negative_across_random_networks():
    gen = torch.Generator().manual_seed(11)
    x, y = conv_batch()
    for i in range(100):
        torch.manual_seed(i)
        model = conv_net()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 3 * torch.rand((), generator=gen))
        assert relative_flatness(model, "0", DICE, x, y, generator=gen, objective="fisher").item() >= 0


def test_published_gradient_is_a_curvature_scaled_weight_decay():
    model, (x, y) = conv_net(), conv_batch()
    weight = model[0].weight
    gen = torch.Generator().manual_seed(0)
    value = relative_flatness(model, "0", DICE, x, y, objective="published", generator=gen)
    grads = torch.autograd.grad(value, list(model.parameters()), allow_unused=True)
    trace = value.item() / weight.norm().item()  # the T it drew
    torch.testing.assert_close(grads[0], trace * weight.detach() / weight.norm().detach())
    assert all(g is None or not g.any() for g in grads[1:])  # no gradient flows through T
    # T estimates Tr(H) of the layer (noisy: the stopping rule may end after a few probes)
    hessian = full_hessian(model, "0.weight", DICE, x, y).reshape(weight.numel(), -1)
    assert trace == pytest.approx(torch.diagonal(hessian).sum().item(), rel=0.3)


def test_l2_control_and_regularizer_objectives():
    model, (x, y) = conv_net(), conv_batch()
    l2 = relative_flatness(model, "0", DICE, x, y, objective="l2")
    assert l2.item() == pytest.approx((model[0].weight ** 2).sum().item(), rel=1e-12)
    reg = FAMRegularizer(model, "0", lam=0.5, objective="fisher")
    out = reg(DICE, x, y)
    assert out.kappa.item() >= 0 and out.loss.item() == pytest.approx(out.task_loss.item() + 0.5 * out.kappa.item())
    with pytest.raises(ValueError, match="objective must be one of kappa, fisher, published, l2"):
        FAMRegularizer(model, "0", objective="sharpness")
