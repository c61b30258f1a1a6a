"""convs.py: convolution twins equal the stock layers in value and in every derivative order, and keep the
higher-order derivatives on kernels of the layer's own shape."""

import collections
import copy

import pytest
import torch
from monai.losses import DiceLoss
from monai.networks.nets import UNet
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fam_skull.fam.convs import decompose_convs, restore_convs
from fam_skull.fam.regularizer import FAMRegularizer

LAYERS = {
    "conv3d": lambda: nn.Conv3d(3, 4, 3, padding=1),
    "conv3d, stride 2": lambda: nn.Conv3d(3, 4, 3, stride=2, padding=1),
    "transposed 3d, stride 2, output padding 1": lambda: nn.ConvTranspose3d(3, 4, 3, stride=2, padding=1, output_padding=1),
    "conv2d, groups, dilation, reflect padding": lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, padding_mode="reflect"),
    "conv1d, no bias": lambda: nn.Conv1d(3, 2, 5, padding=2, bias=False),
}


def _derivatives(layer: nn.Module, x: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
    """Value, gradient, a Hessian-vector product and the gradient of v^T H v of a non-quadratic function of the
    layer, with respect to its input and weight."""
    y = layer(x)
    value = (torch.tanh(y) ** 2).sum()
    gx, gw = torch.autograd.grad(value, (x, layer.weight), create_graph=True)
    (hv,) = torch.autograd.grad(gw, layer.weight, v, create_graph=True)
    third = torch.autograd.grad((hv * v).sum(), (x, layer.weight))
    return [y, gx, gw, hv, *third]


@pytest.mark.parametrize("name", list(LAYERS))
def test_twins_equal_the_stock_layers_to_the_third_order(name):
    torch.manual_seed(0)
    stock = LAYERS[name]().double()
    twin = copy.deepcopy(stock)
    assert decompose_convs(twin) == [""] and type(twin).__name__.startswith("Kernel")
    shape = (2, stock.in_channels) + (7,) * (1 if isinstance(stock, nn.Conv1d) else 2 if isinstance(stock, nn.Conv2d) else 3)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(stock.weight)
    for a, b in zip(_derivatives(twin, x, v), _derivatives(stock, x, v)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert set(twin.state_dict()) == set(stock.state_dict())
    restore_convs(twin, [""])
    assert type(twin) is type(stock)


def _tiny_unet():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(2, 4, 8), strides=(2, 2), num_res_units=1).double()


class _ConvKernels(TorchDispatchMode):
    """Records the spatial kernel size of every convolution PyTorch runs."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.kernels[tuple(args[1].shape[2:])] += 1
        return func(*args, **(kwargs or {}))


def test_fam_with_conv_twins_gives_the_same_step_on_layer_sized_kernels():
    x = torch.randn(2, 1, 16, 16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (x > 0.3).double()
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    results = {}
    for twins in (False, True):
        model = _tiny_unet()
        reg = FAMRegularizer(model, lam=0.5, seed=2, objective="kappa", conv_twins=twins)
        reg(loss_fn, x, y).loss.backward()  # the first step: upstream twins get their stock kernels back
        model.zero_grad()
        with _ConvKernels() as log:
            out = reg(loss_fn, x, y)
            out.loss.backward()
        kinds = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
        results[twins] = (out.kappa.detach(), [p.grad.clone() for p in model.parameters()], log.kernels, kinds)
    (k0, g0, stock_kernels, _), (k1, g1, twin_kernels, kinds) = results[False], results[True]
    torch.testing.assert_close(k1, k0, rtol=1e-10, atol=0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-14)
    # PyTorch's own higher-order formula convolves with whole activation maps; the twins never do
    assert any(max(k) > 3 for k in stock_kernels)
    assert all(max(k) <= 3 for k in twin_kernels)
    # the encoder (upstream of the bottleneck) is differentiated once and keeps its stock convolutions
    assert kinds["model.0.conv.unit0.conv"] == "Conv3d"
    assert kinds["model.1.submodule.1.submodule.conv.unit0.conv"] == "KernelConv3d"  # the bottleneck
    assert kinds["model.2.0.conv"] == "KernelConvTranspose3d"
