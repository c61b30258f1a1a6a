"""kappa against brute-force Hessians, the estimator against the exact value, gradients against finite differences."""

import pytest
import torch
from monai.losses import DiceLoss
from monai.networks.nets import UNet
from torch import nn
from torch.func import functional_call

from fam_skull.fam.flatness import flatness_of_loss, relative_flatness, resolve_layer


@pytest.fixture(autouse=True)
def float64():
    """These checks compare against brute force to 1e-8: run them in double precision."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def full_hessian(model, param_name, loss_fn, x, y):
    """The full Hessian of the loss w.r.t. one weight tensor (no Hessian-vector products involved)."""
    params = dict(model.named_parameters())

    def loss_of(w):
        return loss_fn(functional_call(model, {**params, param_name: w}, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, params[param_name].detach())


def direct_layout(hess, weight):
    d = weight.shape[0]
    m = weight[0].numel()
    return weight.reshape(d, m), hess.reshape(d, m, d, m)


def transposed_layout(hess, weight):
    # ConvTranspose weights are (in, out, k...): output unit s owns weight[:, s]
    n = weight.dim()
    perm = [1, 0, *range(2, n)]
    wt = weight.permute(*perm)
    d, m = wt.shape[0], wt[0].numel()
    h = hess.permute(*perm, *[n + p for p in perm])
    return wt.reshape(d, m), h.reshape(d, m, d, m)


def brute_kappa(model, param_name, loss_fn, x, y, layout=direct_layout):
    """sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}) read off the full Hessian."""
    weight = dict(model.named_parameters())[param_name].detach()
    w, h = layout(full_hessian(model, param_name, loss_fn, x, y), weight)
    return torch.einsum("ab,atbt->", w @ w.T, h).item()


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def mlp_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)


def conv_net(transposed=False):
    torch.manual_seed(0)
    first = nn.ConvTranspose3d(1, 3, 3, padding=1) if transposed else nn.Conv3d(1, 3, 3, padding=1)
    return nn.Sequential(first, nn.Tanh(), nn.Conv3d(3, 2, 1))


def conv_batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 1, 5, 5, 4, generator=g), (torch.rand(2, 1, 5, 5, 4, generator=g) > 0.5).double()


DICE = DiceLoss(to_onehot_y=True, softmax=True)
CE = nn.CrossEntropyLoss()


@pytest.mark.parametrize(
    "net, batch, loss_fn, layout",
    [
        (mlp, mlp_batch, CE, direct_layout),
        (conv_net, conv_batch, DICE, direct_layout),
        (lambda: conv_net(True), conv_batch, DICE, transposed_layout),
    ],
    ids=["linear-ce", "conv3d-dice", "convtranspose3d-dice"],
)
def test_exact_matches_brute_force_hessian(net, batch, loss_fn, layout):
    model, (x, y) = net(), batch()
    expected = brute_kappa(model, "0.weight", loss_fn, x, y, layout)
    got = relative_flatness(model, "0", loss_fn, x, y, estimator="exact").item()
    assert abs(expected) > 1e-6
    assert got == pytest.approx(expected, rel=1e-8)
    # a parameter name resolves to the same layer
    assert relative_flatness(model, "0.weight", loss_fn, x, y, estimator="exact").item() == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("net, batch, loss_fn", [(mlp, mlp_batch, CE), (conv_net, conv_batch, DICE)], ids=["WZ", "LG"])
def test_hutchinson_is_unbiased_for_kappa_and_its_gradient(net, batch, loss_fn):
    # the MLP layer (d=6 > m=5) samples V = W Z; the conv layer (d=3 < m=27) samples V = L G
    model, (x, y) = net(), batch()
    ref = resolve_layer(model, "0")
    params = list(model.parameters())
    loss = loss_fn(model(x), y)
    exact = flatness_of_loss(loss, ref, estimator="exact")
    exact_grad = torch.cat([g.flatten() for g in torch.autograd.grad(exact, params, retain_graph=True)])
    gen = torch.Generator().manual_seed(3)
    n = 400
    values, grads = [], []
    for _ in range(n):
        s = flatness_of_loss(loss, ref, generator=gen)
        values.append(s.item())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(s, params, retain_graph=True)]))
    values = torch.tensor(values)
    stderr = values.std() / n**0.5
    assert abs(values.mean() - exact.item()) <= 4 * stderr
    mean_grad = torch.stack(grads).mean(0)
    assert torch.nn.functional.cosine_similarity(mean_grad, exact_grad, dim=0) >= 0.99


def test_probes_average():
    model, (x, y) = mlp(), mlp_batch()
    loss = CE(model(x), y)
    ref = resolve_layer(model, "0")
    gen = torch.Generator().manual_seed(0)
    four = flatness_of_loss(loss, ref, generator=gen, probes=4)
    gen = torch.Generator().manual_seed(0)
    singles = [flatness_of_loss(loss, ref, generator=gen) for _ in range(4)]
    assert four.item() == pytest.approx(torch.stack(singles).mean().item(), rel=1e-12)


def tiny_unet():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(2, 3), strides=(2,), num_res_units=0, norm="instance")


def test_unet_fam_gradient_matches_finite_differences_only_with_norm_handling():
    x, y = conv_batch()
    x, y = x[:, :, :4, :4, :4], y[:, :, :4, :4, :4]
    model = tiny_unet()
    params = list(model.parameters())
    kappa = relative_flatness(model, "bottleneck", DICE, x, y, estimator="exact")
    handled = torch.autograd.grad(kappa, params)
    # stock fused InstanceNorm kernels: the same kappa value, a different (wrong) third-order gradient
    ref = resolve_layer(model, "bottleneck")
    stock = flatness_of_loss(DICE(model(x), y), ref, estimator="exact")
    assert stock.item() == pytest.approx(kappa.item(), rel=1e-10)
    fused = torch.autograd.grad(stock, params)
    gen = torch.Generator().manual_seed(5)
    eps = 1e-5
    for _ in range(2):
        u = [torch.randn(p.shape, generator=gen) for p in params]
        with torch.no_grad():
            for p, d in zip(params, u):
                p.add_(eps * d)
        plus = relative_flatness(model, "bottleneck", DICE, x, y, estimator="exact").item()
        with torch.no_grad():
            for p, d in zip(params, u):
                p.sub_(2 * eps * d)
        minus = relative_flatness(model, "bottleneck", DICE, x, y, estimator="exact").item()
        with torch.no_grad():
            for p, d in zip(params, u):
                p.add_(eps * d)
        fd = (plus - minus) / (2 * eps)
        assert sum((g * d).sum() for g, d in zip(handled, u)).item() == pytest.approx(fd, rel=1e-5)
        assert abs(sum((g * d).sum() for g, d in zip(fused, u)).item() - fd) > 1e-3 * abs(fd)


def test_reparameterization_invariance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = mlp_batch()
    before = relative_flatness(model, "0", CE, x, y, estimator="exact").item()
    trace_before = torch.diagonal(full_hessian(model, "0.weight", CE, x, y).reshape(30, 30)).sum().item()
    alpha = 3.0
    with torch.no_grad():
        model[0].weight.mul_(alpha)
        model[0].bias.mul_(alpha)
        model[2].weight.div_(alpha)
    after = relative_flatness(model, "0", CE, x, y, estimator="exact").item()
    trace_after = torch.diagonal(full_hessian(model, "0.weight", CE, x, y).reshape(30, 30)).sum().item()
    assert after == pytest.approx(before, rel=1e-8)
    assert trace_after == pytest.approx(trace_before / alpha**2, rel=1e-6)
    assert abs(trace_after - trace_before) > 0.5 * abs(trace_before)


def test_bottleneck_names_and_bad_layer():
    unet = UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2)
    assert resolve_layer(unet, "bottleneck").name == "model.1.submodule.1.submodule.1.submodule.conv.unit1.conv"
    plain = UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=0)
    assert resolve_layer(plain, "bottleneck").name == "model.1.submodule.1.submodule.1.submodule.conv"
    wrapped = nn.parallel.DistributedDataParallel.__new__(nn.parallel.DistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = plain
    assert resolve_layer(wrapped, "bottleneck").module is plain.model[1].submodule[1].submodule[1].submodule.conv
    with pytest.raises(ValueError, match=r"'model\.9' is not a Linear.*one of: model\.0\.conv"):
        resolve_layer(plain, "model.9")
    with pytest.raises(ValueError, match="bottleneck"):
        resolve_layer(nn.Sequential(nn.Tanh()), "bottleneck")
