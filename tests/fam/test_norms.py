"""Primitive-op norms: the same function, state and state_dict as PyTorch's, and exact third derivatives."""

import pytest
import torch
from torch import nn

from fam_skull.fam.norms import decompose_norms, decomposed_norms, restore_norms

LAYERS = {
    "instance": lambda: nn.InstanceNorm3d(3),
    "instance-affine-tracked": lambda: nn.InstanceNorm3d(3, affine=True, track_running_stats=True),
    "batch": lambda: nn.BatchNorm3d(3),
    "batch-cumulative": lambda: nn.BatchNorm3d(3, momentum=None),
    "layer": lambda: nn.LayerNorm([4, 4, 3]),
}


def perturbed(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


@pytest.mark.parametrize("name", LAYERS)
def test_same_outputs_state_and_keys(name):
    torch.manual_seed(0)
    stock = perturbed(LAYERS[name]().double())
    twin = LAYERS[name]().double()
    twin.load_state_dict(stock.state_dict())
    assert decompose_norms(twin) == [""]
    assert isinstance(twin, type(stock)) and type(twin) is not type(stock)
    for mode in ("train", "train", "eval"):
        stock.train(mode == "train")
        twin.train(mode == "train")
        x = torch.randn(2, 3, 4, 4, 3, dtype=torch.float64) * 2 + 1
        torch.testing.assert_close(twin(x), stock(x), rtol=1e-10, atol=1e-10)
    assert twin.state_dict().keys() == stock.state_dict().keys()
    for key, value in stock.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value, rtol=1e-10, atol=1e-10)
    restore_norms(twin)
    assert type(twin) is type(stock)


def third_derivative(f, x, u):
    """d^3/dt^3 f(x + t u) at t=0 by nested autograd."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    (h,) = torch.autograd.grad((g * u).sum(), x, create_graph=True)
    (t,) = torch.autograd.grad((h * u).sum(), x)
    return (t * u).sum().item()


def second_derivative(f, x, u):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    (h,) = torch.autograd.grad((g * u).sum(), x)
    return (h * u).sum().item()


@pytest.mark.parametrize("name", LAYERS)
def test_third_derivative_matches_finite_differences(name):
    torch.manual_seed(1)
    layer = perturbed(LAYERS[name]().double()).train()
    decompose_norms(layer)
    weights = torch.randn(2, 3, 4, 4, 3, dtype=torch.float64)

    def f(x):
        return (torch.sin(layer(x)) * weights).sum()

    x = torch.randn(2, 3, 4, 4, 3, dtype=torch.float64)
    u = torch.randn_like(x)
    eps = 1e-4
    fd = (second_derivative(f, x + eps * u, u) - second_derivative(f, x - eps * u, u)) / (2 * eps)
    assert third_derivative(f, x, u) == pytest.approx(fd, rel=1e-6)


def test_context_restores_only_what_it_swapped():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.InstanceNorm3d(2), nn.GroupNorm(1, 2), nn.BatchNorm3d(2))
    decompose_norms(model[3])
    with decomposed_norms(model) as swapped:
        assert swapped == ["1"]
        assert type(model[1]).__name__ == "PrimitiveInstanceNorm3d"
    assert type(model[1]) is nn.InstanceNorm3d
    assert type(model[2]) is nn.GroupNorm
    assert type(model[3]).__name__ == "PrimitiveBatchNorm3d"
