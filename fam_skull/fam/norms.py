"""Normalization layers recomputed from primitive ops, so third-order autograd through them is exact.

PyTorch's fused ``instance_norm``, ``batch_norm`` (training mode) and ``layer_norm`` kernels return wrong
third-order derivatives without any warning, and the FAM gradient is third order. The classes here keep
the parameters, buffers and state_dict keys of the stock layers (they are subclasses swapped in place), and
compute the same function from ``mean``, products and ``rsqrt``. ``GroupNorm`` is exact and left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

if TYPE_CHECKING:  # the mixins below only ever sit in front of these stock classes
    _InstanceNormBase = _InstanceNorm
    _BatchNormBase = _BatchNorm
    _LayerNormBase = nn.LayerNorm
else:
    _InstanceNormBase = _BatchNormBase = _LayerNormBase = object


def _moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=dims, keepdim=True)
    centred = x - mean
    return centred, (centred * centred).mean(dim=dims, keepdim=True)


def _affine(y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, shape: tuple) -> torch.Tensor:
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


class _PrimitiveInstanceNorm(_InstanceNormBase):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self._get_no_batch_dim():
            return self.forward(x.unsqueeze(0)).squeeze(0)
        dims = tuple(range(2, x.dim()))
        shape = (1, -1) + (1,) * len(dims)
        running_mean, running_var = self.running_mean, self.running_var  # None unless track_running_stats
        if self.training or running_mean is None or running_var is None:
            centred, var = _moments(x, dims)
            if self.training and running_mean is not None and running_var is not None:
                n = x[0, 0].numel()
                with torch.no_grad():
                    m = self.momentum if self.momentum is not None else 0.1
                    running_mean.mul_(1 - m).add_(m * (x - centred).mean(dim=dims).mean(0))
                    running_var.mul_(1 - m).add_(m * (var.flatten(1) * n / max(n - 1, 1)).mean(0))
        else:
            centred = x - running_mean.view(shape)
            var = running_var.view(shape)
        y = centred * torch.rsqrt(var + self.eps)
        return _affine(y, self.weight, self.bias, shape) if self.affine else y


class _PrimitiveBatchNorm(_BatchNormBase):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        dims = (0,) + tuple(range(2, x.dim()))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        running_mean, running_var = self.running_mean, self.running_var
        if self.training or running_mean is None or running_var is None:
            centred, var = _moments(x, dims)
            if self.training and running_mean is not None and running_var is not None:
                n = x.numel() // x.size(1)
                with torch.no_grad():
                    running_mean.mul_(1 - factor).add_(factor * (x - centred).mean(dim=dims))
                    running_var.mul_(1 - factor).add_(factor * var.flatten() * n / max(n - 1, 1))
        else:
            centred = x - running_mean.view(shape)
            var = running_var.view(shape)
        y = centred * torch.rsqrt(var + self.eps)
        return _affine(y, self.weight, self.bias, shape)


class _PrimitiveLayerNorm(_LayerNormBase):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(x.dim() - len(self.normalized_shape), x.dim()))
        centred, var = _moments(x, dims)
        y = centred * torch.rsqrt(var + self.eps)
        if self.elementwise_affine:
            y = y * self.weight
            if self.bias is not None:
                y = y + self.bias
        return y


_MIXINS: tuple[tuple[type, type], ...] = (
    (_InstanceNorm, _PrimitiveInstanceNorm),
    (_BatchNorm, _PrimitiveBatchNorm),
    (nn.LayerNorm, _PrimitiveLayerNorm),
)
_CLASSES: dict[type, type] = {}


def _primitive_class(cls: type) -> type | None:
    if issubclass(cls, (_PrimitiveInstanceNorm, _PrimitiveBatchNorm, _PrimitiveLayerNorm, nn.SyncBatchNorm)):
        return None
    for base, mixin in _MIXINS:
        if issubclass(cls, base):
            if cls not in _CLASSES:
                _CLASSES[cls] = type(f"Primitive{cls.__name__}", (mixin, cls), {"__module__": __name__})
            return _CLASSES[cls]
    return None


def decompose_norms(model: nn.Module) -> list[str]:
    """Swap every fused InstanceNorm/BatchNorm/LayerNorm in ``model`` for its primitive-op twin, in place.

    Parameters, buffers and state_dict keys are unchanged; outputs agree with the fused kernels to rounding.

    Returns:
        The names of the modules that were swapped.
    """
    swapped = []
    for name, module in model.named_modules():
        cls = _primitive_class(type(module))
        if cls is not None:
            module.__class__ = cls
            swapped.append(name)
    return swapped


def _restore(module: nn.Module) -> None:
    # a primitive class's MRO is (class, mixin, stock class, ...)
    module.__class__ = type(module).__mro__[2]


def restore_norms(model: nn.Module) -> None:
    """Undo :func:`decompose_norms`."""
    for module in model.modules():
        if type(module) in _CLASSES.values():
            _restore(module)


def restore_modules(model: nn.Module, names: list[str]) -> None:
    """Put the stock (fused) class back on the named twins of :func:`decompose_norms`."""
    modules = dict(model.named_modules())
    for name in names:
        if type(modules[name]) in _CLASSES.values():
            _restore(modules[name])


def independent_of(outputs: dict[str, list[torch.Tensor]], parameter: torch.Tensor) -> list[str]:
    """The names whose tensors' autograd history never reaches ``parameter``.

    A normalization layer upstream of the FAM layer only meets first derivatives (kappa's gradient reaches it
    through the layer's input, once), where the fused kernels are right; only the layers whose input depends on
    the FAM weight are differentiated three times and need the primitive twin.
    """
    depends: dict[object, bool] = {}
    for tensors in outputs.values():
        for tensor in tensors:
            stack = [(tensor.grad_fn, False)]
            while stack:
                node, expanded = stack.pop()
                if node is None or node in depends:
                    continue
                parents = [n for n, _ in node.next_functions if n is not None]
                if expanded:
                    depends[node] = getattr(node, "variable", None) is parameter or any(depends.get(n, False) for n in parents)
                else:
                    stack.append((node, True))
                    stack.extend((n, False) for n in parents if n not in depends)
    return [name for name, tensors in outputs.items() if not any(depends.get(t.grad_fn, False) for t in tensors)]


@contextlib.contextmanager
def decomposed_norms(model: nn.Module) -> Iterator[list[str]]:
    """Context in which ``model``'s fused norms are primitive-op twins; the ones swapped here come back after."""
    swapped = decompose_norms(model)
    try:
        yield swapped
    finally:
        modules = dict(model.named_modules())
        for name in swapped:
            _restore(modules[name])
