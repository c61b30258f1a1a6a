"""Convolutions whose derivatives of every order are convolution kernels of the layer's own shape.

PyTorch differentiates ``convolution_backward`` (the FAM gradient's second and third orders) with a formula that
computes the weight's term as a convolution whose kernel is a whole activation map (of the gradient's size,
dilated by the layer's stride). On the CPU that costs little; cuDNN has no fast kernels for such shapes (a kappa
step on an H200 took 70x a baseline step, see docs/performance.md). The twins here compute the same function, and every
derivative of it, from three kernels with the layer's own geometry: the forward convolution, its input gradient
(backward-data) and its weight gradient (backward-filter). The three are bilinear, and the derivative of each is
again one of them, so the set is closed under differentiation and exact at every order. Where a derivative needs
both gradients of a layer, one backward call computes them, as PyTorch's own first-order backward does.

Like the normalization twins (:mod:`fam_skull.fam.norms`), the classes are subclasses swapped in place: the
parameters, buffers and state_dict keys stay the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

if TYPE_CHECKING:  # the mixin only ever sits in front of a stock convolution class
    _ConvBase = _ConvNd
else:
    _ConvBase = object

_aten = torch.ops.aten


class _Geometry:
    """The arguments ``aten.convolution`` and ``aten.convolution_backward`` share (stride to groups)."""

    def __init__(self, stride, padding, dilation, transposed: bool, output_padding, groups: int) -> None:
        self.args = (list(stride), list(padding), list(dilation), transposed, list(output_padding), groups)


def _forward(x: torch.Tensor, w: torch.Tensor, g: _Geometry) -> torch.Tensor:
    return _aten.convolution(x, w, None, *g.args)


def _input_grad(grad: torch.Tensor, w: torch.Tensor, shape: torch.Size, g: _Geometry) -> torch.Tensor:
    # backward-data needs the input's shape only
    return _aten.convolution_backward(grad, grad.new_empty(shape), w, None, *g.args, [True, False, False])[0]


def _weight_grad(x: torch.Tensor, grad: torch.Tensor, shape: torch.Size, g: _Geometry) -> torch.Tensor:
    # backward-filter needs the weight's shape only
    return _aten.convolution_backward(grad, x, grad.new_empty(shape), None, *g.args, [False, True, False])[1]


class _Conv(torch.autograd.Function):
    """y = conv(x, W)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, g: _Geometry) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.geometry = g
        return _forward(x, w, g)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        g = ctx.geometry
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1]:  # one backward call for both, as PyTorch's own
            dx, dw = _BothGrads.apply(grad, x, w, g)
            return dx, dw, None
        dx = _InputGrad.apply(grad, w, x.shape, g) if ctx.needs_input_grad[0] else None
        dw = _WeightGrad.apply(x, grad, w.shape, g) if ctx.needs_input_grad[1] else None
        return dx, dw, None


class _BothGrads(torch.autograd.Function):
    """(_InputGrad(y', W), _WeightGrad(x, y')) from one backward call."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, g: _Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(grad, x, w)
        ctx.geometry = g
        ctx.set_materialize_grads(False)
        dx, dw, _ = _aten.convolution_backward(grad, x, w, None, *g.args, [True, True, False])
        return dx, dw

    @staticmethod
    def backward(ctx: Any, hx: torch.Tensor | None, hw: torch.Tensor | None) -> tuple:
        grad, x, w = ctx.saved_tensors
        g = ctx.geometry
        dgrad = dx = dw = None
        if ctx.needs_input_grad[0]:  # both outputs are linear in y': their terms add
            if hx is not None:
                dgrad = _Conv.apply(hx, w, g)
            if hw is not None:
                term = _Conv.apply(x, hw, g)
                dgrad = term if dgrad is None else dgrad + term
        if ctx.needs_input_grad[1] and hw is not None:
            dx = _InputGrad.apply(grad, hw, x.shape, g)
        if ctx.needs_input_grad[2] and hx is not None:
            dw = _WeightGrad.apply(hx, grad, w.shape, g)
        return dgrad, dx, dw, None


class _InputGrad(torch.autograd.Function):
    """The input gradient of conv(., W) for the output gradient y': <_InputGrad(y', W), h> = <y', conv(h, W)>."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, w: torch.Tensor, shape: torch.Size, g: _Geometry) -> torch.Tensor:
        ctx.save_for_backward(grad, w)
        ctx.geometry = g
        return _input_grad(grad, w, shape, g)

    @staticmethod
    def backward(ctx: Any, h: torch.Tensor) -> tuple:
        grad, w = ctx.saved_tensors
        g = ctx.geometry
        dgrad = _Conv.apply(h, w, g) if ctx.needs_input_grad[0] else None
        dw = _WeightGrad.apply(h, grad, w.shape, g) if ctx.needs_input_grad[1] else None
        return dgrad, dw, None, None


class _WeightGrad(torch.autograd.Function):
    """The weight gradient of conv(x, .) for the output gradient y': <_WeightGrad(x, y'), V> = <y', conv(x, V)>."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, grad: torch.Tensor, shape: torch.Size, g: _Geometry) -> torch.Tensor:
        ctx.save_for_backward(x, grad)
        ctx.geometry = g
        return _weight_grad(x, grad, shape, g)

    @staticmethod
    def backward(ctx: Any, v: torch.Tensor) -> tuple:
        x, grad = ctx.saved_tensors
        g = ctx.geometry
        dx = _InputGrad.apply(grad, v, x.shape, g) if ctx.needs_input_grad[0] else None
        dgrad = _Conv.apply(x, v, g) if ctx.needs_input_grad[1] else None
        return dx, dgrad, None, None


class _KernelConv(_ConvBase):
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        dims = len(self.kernel_size)
        padding: Any = self.padding
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0,) * dims
        if isinstance(self, _ConvTransposeNd):
            output_padding = self._output_padding(
                x, output_size, list(self.stride), list(padding), list(self.kernel_size), dims, list(self.dilation)
            )
            g = _Geometry(self.stride, padding, self.dilation, True, output_padding, self.groups)
        else:
            g = _Geometry(self.stride, padding, self.dilation, False, (0,) * dims, self.groups)
        y = _Conv.apply(x, self.weight, g)
        return y if self.bias is None else y + self.bias.view(1, -1, *([1] * dims))


_CLASSES: dict[type, type] = {}


def _kernel_class(cls: type) -> type | None:
    if not issubclass(cls, _ConvNd) or issubclass(cls, _KernelConv):
        return None
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Kernel{cls.__name__}", (_KernelConv, cls), {"__module__": __name__})
    return _CLASSES[cls]


def decompose_convs(model: nn.Module) -> list[str]:
    """Swap every convolution of ``model`` (1-3D, transposed or not, numeric padding) for its twin, in place.

    Returns:
        The names of the modules that were swapped.
    """
    swapped = []
    for name, module in model.named_modules():
        cls = _kernel_class(type(module))
        if cls is not None and not isinstance(getattr(module, "padding", None), str):  # 'same'/'valid' stay stock
            module.__class__ = cls
            swapped.append(name)
    return swapped


def restore_convs(model: nn.Module, names: list[str]) -> None:
    """Put the stock class back on the named twins of :func:`decompose_convs` (other names are left alone)."""
    modules = dict(model.named_modules())
    for name in names:
        if type(modules[name]) in _CLASSES.values():
            modules[name].__class__ = type(modules[name]).__mro__[2]  # (twin, mixin, stock class, ...)
