"""Relative flatness kappa_Tr of one layer (Petzka et al.; FAM, Adilova et al. 2023), exact and estimated.

For the chosen layer's weight as a matrix ``W`` (d x m; row ``w_s`` = incoming weights of output unit ``s``)

    kappa(W) = sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}),   H_{s,s'}[t,t'] = d2 E / (dW[s,t] dW[s',t'])

with E the task loss on the batch. This is kappa itself; the paper's bound scales it by (2m)^-1.
Every value returned here is differentiable with respect to all model parameters (the FAM gradient
is a third-order derivative of the loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from fam_skull.fam.norms import decomposed_norms

Estimator = Literal["hutchinson", "exact"]
Objective = Literal["kappa", "fisher", "published", "l2"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
PUBLISHED_TOLERANCE, PUBLISHED_MAX_PROBES = 1e-4, 200
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_WEIGHT_LAYERS = (nn.Linear, *_CONV, *_CONV_T)


@dataclass(frozen=True)
class LayerRef:
    """A resolved FAM layer: its module name, the module, and whether its weight is stored (in, out, ...)."""

    name: str
    module: nn.Module

    @property
    def weight(self) -> nn.Parameter:
        weight = self.module.weight
        assert isinstance(weight, nn.Parameter)  # resolve_layer admits weight layers only
        return weight

    @property
    def transposed(self) -> bool:
        return isinstance(self.module, _CONV_T)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def weight_matrix(weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """``weight`` as the d x m matrix whose rows are the output units' incoming weights."""
    if transposed:
        weight = weight.transpose(0, 1)
    return weight.reshape(weight.shape[0], -1)


def _matrix_to_weight(matrix: torch.Tensor, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    if transposed:
        shape = (weight.shape[1], weight.shape[0], *weight.shape[2:])
        return matrix.reshape(shape).transpose(0, 1)
    return matrix.reshape(weight.shape)


def _candidates(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)]


def _last_weight_layer(module: nn.Module, prefix: str, skip: tuple[str, ...] = ()) -> str | None:
    found = None
    for name, m in module.named_modules():
        if isinstance(m, _WEIGHT_LAYERS) and not name.startswith(skip):
            found = f"{prefix}.{name}" if name else prefix
    return found


def _bottleneck_name(model: nn.Module) -> str | None:
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets import AutoEncoder

    if hasattr(model, "fam_bottleneck"):
        return str(model.fam_bottleneck)
    skips = [(name, m) for name, m in model.named_modules() if isinstance(m, SkipConnection)]
    if skips:
        # MONAI UNet nests SkipConnections; the innermost one wraps the bottom layer. Its 1x1 residual
        # projection is a shortcut, not the bottleneck.
        name, inner = max(skips, key=lambda item: item[0].count("."))
        return _last_weight_layer(inner.submodule, f"{name}.submodule" if name else "submodule", skip=("residual",))
    if isinstance(model, AutoEncoder):
        return _last_weight_layer(model.intermediate, "intermediate") or _last_weight_layer(model.encode, "encode")
    return None


def resolve_layer(model: nn.Module, layer: str) -> LayerRef:
    """Find the FAM layer of ``model`` by module name, parameter name, or ``"bottleneck"``.

    ``"bottleneck"`` is the last convolution of the bottom layer of a MONAI ``UNet`` (its residual 1x1
    projection excluded), the last weight layer of a MONAI ``AutoEncoder``'s intermediate block (or of its
    encoder when there is none), or the ``fam_bottleneck`` a model declares (the linear-latent autoencoder's
    Linear from the latent back to the decoder).

    Raises:
        ValueError: the name matches no Linear/ConvNd/ConvTransposeNd; the message lists the candidates.
    """
    model = unwrap(model)
    name = _bottleneck_name(model) if layer == "bottleneck" else layer
    modules = dict(model.named_modules())
    if name is not None and name.endswith(".weight") and name not in modules:
        name = name[: -len(".weight")]
    module = modules.get(name) if name is not None else None
    if name is None or not isinstance(module, _WEIGHT_LAYERS):
        raise ValueError(
            f"FAM layer {layer!r} is not a Linear/ConvNd/ConvTransposeNd of {type(model).__name__}; "
            f"use 'bottleneck' or one of: {', '.join(_candidates(model))}"
        )
    return LayerRef(name, module)


def _factor(matrix: torch.Tensor) -> torch.Tensor:
    """A d x r matrix L with L L^T = W W^T and r = min(d, m), built from the live W (so it stays in the graph)."""
    d, m = matrix.shape
    if d < m:
        chol, info = torch.linalg.cholesky_ex(matrix @ matrix.T)
        if int(info) == 0:
            return chol
    return matrix


def _random(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None, rademacher: bool):
    device = generator.device if generator is not None else like.device
    if rademacher:
        z = torch.randint(0, 2, shape, generator=generator, device=device, dtype=like.dtype) * 2 - 1
    else:
        z = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
    return z.to(like.device)


def _hvp(grad_w: torch.Tensor, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # grad_outputs=v differentiates <grad_w, v> as if v were constant, while v stays in the graph
    # for the third-order derivative.
    (hv,) = torch.autograd.grad(grad_w, weight, grad_outputs=v, retain_graph=True, create_graph=True)
    return hv


def _directions(ref: LayerRef, estimator: Estimator, probes: int, generator: torch.Generator | None):
    """The probe directions V (shaped like the weight, built from the live W so they stay in the graph).

    ``"exact"``: the min(d, m) * m directions (column j of L placed in column t), whose quadratic forms sum to
    the measure. ``"hutchinson"``: ``probes`` draws V = L G (L L^T = W W^T, G Gaussian, when d < m) or V = W Z
    (Z Rademacher), each quadratic form unbiased for the measure.
    """
    weight = ref.weight
    matrix = weight_matrix(weight, ref.transposed)
    factor = _factor(matrix)
    m = matrix.shape[1]
    if estimator == "exact":
        eye = torch.eye(m, dtype=matrix.dtype, device=matrix.device)
        for j in range(factor.shape[1]):
            for t in range(m):
                yield _matrix_to_weight(factor[:, j : j + 1] * eye[t], weight, ref.transposed)
        return
    for _ in range(probes):
        g = _random((factor.shape[1], m), matrix, generator, rademacher=factor is matrix)
        yield _matrix_to_weight(factor @ g, weight, ref.transposed)


def _gauss_newton_form(outputs: torch.Tensor, weight: torch.Tensor, u: torch.Tensor, jt_u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v^T F v for F = mean over batch and voxels of J^T (diag(p) - p p^T) J, J = d logits / d W.

    J v comes from the double-vjp trick: ``jt_u`` = J^T u is linear in the dummy u, so its vjp with v is J v.
    Softmax over channel dim 1; one channel: the sigmoid's p (1 - p).
    """
    (jv,) = torch.autograd.grad(jt_u, u, grad_outputs=v, retain_graph=True, create_graph=True)
    if outputs.shape[1] == 1:
        p = torch.sigmoid(outputs)
        return (p * (1 - p) * jv * jv).mean()
    p = torch.softmax(outputs, dim=1)
    return ((p * jv * jv).sum(1) - (p * jv).sum(1) ** 2).mean()


def _published(loss: torch.Tensor, weight: torch.Tensor, generator: torch.Generator | None, max_probes: int) -> torch.Tensor:
    """The FAM authors' skull regularizer: ||W||_F * T, T a Rademacher Hutchinson estimate of Tr(H) of the layer
    (probes until the running mean changes by less than 1e-4 relative, at most ``max_probes``: the authors' 200),
    rebuilt as a constant."""
    (grad_w,) = torch.autograd.grad(loss, weight, create_graph=True)
    total, mean = 0.0, None
    for n in range(1, max_probes + 1):
        z = _random(tuple(weight.shape), weight, generator, rademacher=True)
        (hz,) = torch.autograd.grad(grad_w, weight, grad_outputs=z, retain_graph=True)
        total += float((hz * z).sum())
        previous, mean = mean, total / n
        if previous is not None and abs(mean - previous) < PUBLISHED_TOLERANCE * abs(previous):
            break
    return weight.norm() * torch.tensor(mean, dtype=weight.dtype, device=weight.device)


def flatness_of_loss(
    loss: torch.Tensor,
    ref: LayerRef,
    *,
    estimator: Estimator = "hutchinson",
    probes: int = 1,
    generator: torch.Generator | None = None,
    objective: Objective = "kappa",
    outputs: torch.Tensor | None = None,
    trace_probes: int = PUBLISHED_MAX_PROBES,
) -> torch.Tensor:
    """The ``objective`` of ``ref``'s weight for an already computed ``loss`` (its graph is kept for
    ``loss.backward()``).

    Objectives:
        ``kappa``: relative flatness sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}) of the task loss's Hessian (third-order
        gradient). ``fisher``: the same with H replaced by the Gauss-Newton matrix of the mean voxel-wise
        cross-entropy of the output distribution (>= 0, rescaling invariant, second-order gradient; needs
        ``outputs``, the logits). ``published``: the authors' ||W||_F * Tr(H) estimate (at most ``trace_probes``
        probes), whose gradient is T * W / ||W||_F (not rescaling invariant). ``l2``: ||W||_F^2, a weight decay on the layer alone.

    ``"exact"`` sums the quadratic forms of min(d, m) * m directions (small layers, tests); ``"hutchinson"``
    averages ``probes`` unbiased samples whose gradient is unbiased too (see :func:`_directions`).

    Note that normalization layers between the weight and the loss must be primitive-op ones
    (:mod:`fam_skull.fam.norms`) for the gradient of ``kappa`` to be right; :func:`relative_flatness` and
    :class:`~fam_skull.fam.regularizer.FAMRegularizer` see to that.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    weight = ref.weight
    if objective == "l2":
        return (weight * weight).sum()
    if objective == "published":
        return _published(loss, weight, generator, trace_probes)
    if objective == "fisher":
        if outputs is None:
            raise ValueError("objective 'fisher' needs the network's outputs (logits)")
        u = torch.zeros_like(outputs, requires_grad=True)
        (jt_u,) = torch.autograd.grad(outputs, weight, grad_outputs=u, create_graph=True)
        samples = [_gauss_newton_form(outputs, weight, u, jt_u, v) for v in _directions(ref, estimator, probes, generator)]
    else:
        (grad_w,) = torch.autograd.grad(loss, weight, create_graph=True)
        samples = [(_hvp(grad_w, weight, v) * v).sum() for v in _directions(ref, estimator, probes, generator)]
    stacked = torch.stack(samples)
    return stacked.sum() if estimator == "exact" else stacked.mean()


def relative_flatness(
    model: nn.Module,
    layer: str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    estimator: Estimator = "hutchinson",
    probes: int = 1,
    generator: torch.Generator | None = None,
    objective: Objective = "kappa",
) -> torch.Tensor:
    """kappa_Tr (or another ``objective``, see :func:`flatness_of_loss`) of ``layer`` on this batch, a scalar
    differentiable with respect to every model parameter.

    Args:
        model: the network; ``loss_fn(model(inputs), targets)`` is the task loss E.
        layer: a module name, a parameter name, or ``"bottleneck"`` (see :func:`resolve_layer`).
        estimator: ``"exact"`` or the unbiased ``"hutchinson"`` estimator.
        probes: number of Hutchinson probes averaged.
        generator: random source for the probes.
        objective: ``kappa`` (default), ``fisher``, ``published`` or ``l2``.

    Fused normalization layers are computed through primitive-op twins during this call so that the
    third-order gradient is exact; the model's classes are restored afterwards.
    """
    ref = resolve_layer(model, layer)
    with decomposed_norms(unwrap(model)):
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
    return flatness_of_loss(loss, ref, estimator=estimator, probes=probes, generator=generator, objective=objective, outputs=outputs)
