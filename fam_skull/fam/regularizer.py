"""FAMRegularizer: the FAM objective E + lambda * kappa (or another objective) bound to a model, for any training loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from fam_skull.fam.convs import decompose_convs, restore_convs
from fam_skull.fam.flatness import OBJECTIVES, PUBLISHED_MAX_PROBES, Estimator, Objective, flatness_of_loss, resolve_layer, unwrap
from fam_skull.fam.norms import decompose_norms, independent_of, restore_modules

# The one default objective and lambda (config, this class, the docs), chosen by the seeded study (docs/study): kappa
# at 0.003 cost eval1 DSC (p 6e-9) and destabilized late training; fisher at 3 was neutral with flat curves, and
# its gradient is second order (cheaper) and it cannot run away below zero. kappa_F's gradient is ~1000x smaller
# than kappa's, hence the larger lambda.
DEFAULT_OBJECTIVE: Objective = "fisher"
DEFAULT_LAMBDA = 3.0
Reduction = Literal["mean", "sum"]
# What each objective's value is called in logs, metrics.csv, TensorBoard and curves (fisher's is kappa_F, not kappa).
OBJECTIVE_COLUMNS: dict[str, str] = {"kappa": "kappa", "fisher": "kappa_F", "published": "norm_trace", "l2": "sq_norm"}


@dataclass
class FAMOutput:
    """What one regularized step produced: ``loss`` to call ``backward()`` on, and its parts for logging.

    ``kappa`` is the objective's value (kappa, kappa_F, ...; named in :data:`OBJECTIVE_COLUMNS`), None on steps
    where the regularizer is off (warm-up, or between every-k steps).
    """

    loss: torch.Tensor
    task_loss: torch.Tensor
    kappa: torch.Tensor | None
    outputs: torch.Tensor | None = None


class FAMRegularizer:
    """Adds ``lam * kappa`` of one layer to the task loss (or ``lam`` times another ``objective``).

    Args:
        model: the network (a DistributedDataParallel wrapper is fine: forward through it, and the
            final ``loss.backward()`` produces the synchronised gradient).
        layer: module or parameter name, or ``"bottleneck"``.
        lam: regularization strength lambda (>= 0).
        estimator: ``"hutchinson"`` (default, unbiased) or ``"exact"``.
        probes: Hutchinson probes per active step (budget is better spent on frequency than probes).
        trace_probes: ``published`` only: the most probes of its Tr(H) estimate (the authors': 200).
        every: apply FAM on every k-th step only.
        scale_lambda: multiply lambda by ``every`` on active steps so the time-averaged gradient matches
            FAM on every step.
        warmup_steps: steps of plain training before FAM switches on.
        seed: seed of the probe generator; the same seed on every DDP rank keeps probes identical, so
            the averaged gradient equals the single-process one on the global batch.
        objective: ``kappa`` (relative flatness of the task loss's Hessian), ``fisher`` (of the Gauss-Newton
            matrix: >= 0, second order), ``published`` (the authors' ||W||_F * Tr(H)) or ``l2`` (||W||_F^2);
            see :func:`~fam_skull.fam.flatness.flatness_of_loss`.
        chunk: samples per FAM pass (``kappa`` and ``fisher``). None: the whole batch, sharing the training
            forward. With a smaller chunk, :meth:`chunked_step` computes the term on slices of the batch, each
            backwarded before the next (its higher-order graph freed), with the same probe in every pass: the same
            value and gradient as one pass over the batch at the peak memory of one chunk's pass, for one more
            forward per chunk. It needs a loss that is a per-sample ``loss_reduction`` (mean or sum; MONAI's Dice,
            Dice+CE and Dice+focal losses are) and no layer that couples the samples of a batch (BatchNorm in
            training mode, dropout); every chunked step checks that the passes' losses add up to the batch's.
        loss_reduction: how the task loss combines the samples of a batch (``chunk`` only).
        conv_twins: compute the convolutions downstream of the FAM layer with twins whose derivatives of every
            order are convolutions of the layer's own geometry (:mod:`fam_skull.fam.convs`): PyTorch's higher-order
            formula uses whole activation maps as kernels, which cuDNN runs slowly. Same values and gradients.

    The model's fused InstanceNorm/BatchNorm/LayerNorm layers are swapped, in place, for primitive-op twins with
    the same parameters and state_dict (:mod:`fam_skull.fam.norms`): the fused kernels' third-order derivatives
    are wrong, and the FAM gradient is third order. After the first forward, the twins whose input does not
    depend on the FAM layer's weight (the encoder of a U-Net: differentiated once) get their fused kernels back.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str = "bottleneck",
        lam: float = DEFAULT_LAMBDA,
        *,
        estimator: Estimator = "hutchinson",
        probes: int = 1,
        trace_probes: int = PUBLISHED_MAX_PROBES,
        every: int = 1,
        scale_lambda: bool = True,
        warmup_steps: int = 0,
        seed: int = 0,
        objective: Objective = DEFAULT_OBJECTIVE,
        chunk: int | None = None,
        loss_reduction: Reduction = "mean",
        conv_twins: bool = False,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if chunk is not None:
            _check_chunkable(model, chunk, objective, loss_reduction)
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if every < 1 or probes < 1 or trace_probes < 1 or warmup_steps < 0:
            raise ValueError(
                f"every, probes and trace_probes must be >= 1 and warmup_steps >= 0 (got {every}, {probes}, {trace_probes}, {warmup_steps})"
            )
        self.model = model
        self.ref = resolve_layer(model, layer)
        self.lam = lam
        self.estimator = estimator
        self.objective = objective
        self.probes = probes
        self.trace_probes = trace_probes
        self.every = every
        self.scale_lambda = scale_lambda
        self.warmup_steps = warmup_steps
        self.chunk = chunk
        self.loss_reduction = loss_reduction
        self.step = 0
        self.generator = torch.Generator(device=self.ref.weight.device).manual_seed(seed)
        self.conv_twins = conv_twins
        self._twin_outputs: dict[str, list[torch.Tensor]] = {}
        self._fused: list[str] | None = None  # the twins given their stock kernels back, once known
        twins = decompose_norms(unwrap(model)) + (decompose_convs(unwrap(model)) if conv_twins else [])
        self._hooks = [unwrap(model).get_submodule(name).register_forward_hook(self._recorder(name)) for name in twins]

    def _recorder(self, name: str):
        def record(module, args, output) -> None:
            self._twin_outputs.setdefault(name, []).append(output)

        return record

    def _fuse_upstream(self) -> None:
        """Once a forward with a graph was recorded: stock kernels back on the twins upstream of the FAM layer."""
        recorded, self._twin_outputs = self._twin_outputs, {}
        if not recorded or any(t.grad_fn is None for tensors in recorded.values() for t in tensors):
            return  # no graph (no_grad, frozen input): look again at the next forward
        self._fuse(independent_of(recorded, self.ref.weight))

    def _fuse(self, names: list[str]) -> None:
        restore_modules(unwrap(self.model), names)
        restore_convs(unwrap(self.model), names)
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._fused = [], list(names)

    @property
    def active(self) -> bool:
        """Whether the next step is regularized."""
        k = self.step - self.warmup_steps
        return self.lam > 0 and k >= 0 and k % self.every == 0

    @property
    def step_lambda(self) -> float:
        """The lambda applied on an active step."""
        return self.lam * self.every if self.scale_lambda else self.lam

    def regularize(self, task_loss: torch.Tensor, outputs: torch.Tensor | None = None) -> FAMOutput:
        """The FAM loss for a task loss computed by a forward through ``model`` (whose ``outputs``, the logits,
        the ``fisher`` objective needs); advances the step count."""
        if self._hooks:
            self._fuse_upstream()
        active = self.active
        self.step += 1
        if not active:
            return FAMOutput(task_loss, task_loss, None)
        kappa = self._flatness(task_loss, outputs)
        return FAMOutput(task_loss + self.step_lambda * kappa, task_loss, kappa)

    def _flatness(self, loss: torch.Tensor, outputs: torch.Tensor | None) -> torch.Tensor:
        return flatness_of_loss(
            loss,
            self.ref,
            estimator=self.estimator,
            probes=self.probes,
            generator=self.generator,
            objective=self.objective,
            outputs=outputs,
            trace_probes=self.trace_probes,
        )

    def chunked(self, batch: int) -> bool:
        """Whether the next step on a batch of ``batch`` samples runs in chunks (:meth:`chunked_step`)."""
        return self.chunk is not None and batch > self.chunk and self.active

    def chunked_step(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    ) -> FAMOutput:
        """An active step in passes of ``chunk`` samples (see the class): each pass's ``lambda * kappa`` share is
        backwarded at once (through ``backward``, e.g. a GradScaler's), then the training forward runs. The
        returned ``loss`` (task loss + lambda * kappa, the latter a constant) is to ``backward()`` as usual: the FAM
        gradient is already in ``.grad`` (under DDP the passes run in ``no_sync``; the final backward averages all).

        Raises:
            ValueError: the passes' losses do not add up to the batch's (the message says what it needs).
        """
        if not self.chunked(inputs.shape[0]):
            raise ValueError(f"chunked_step: this step is not chunked (chunk {self.chunk}, batch {inputs.shape[0]}, active {self.active})")
        assert self.chunk is not None  # chunked() says so
        batch, state = inputs.shape[0], self.generator.get_state()
        ddp = self.model if isinstance(self.model, nn.parallel.DistributedDataParallel) else None
        kappa = combined = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        for start in range(0, batch, self.chunk):
            x, t = inputs[start : start + self.chunk], targets[start : start + self.chunk]
            # a per-sample mean weighs each pass by its share of the batch; kappa_F is a mean over samples either way
            share = len(x) / batch if self.loss_reduction == "mean" else 1.0
            self.generator.set_state(state)  # the same probe in every pass, so the passes add up to the batch's
            with ddp.no_sync() if ddp is not None else contextlib.nullcontext():
                outputs = self.model(x)
                if self._hooks:
                    self._fuse_upstream()
                loss = loss_fn(outputs, t)
                term = self._flatness(loss, outputs) * (len(x) / batch if self.objective == "fisher" else share)
                backward(self.step_lambda * term)
            kappa = kappa + term.detach()
            combined = combined + share * loss.detach()
        self.step += 1
        outputs = self.model(inputs)
        task_loss = loss_fn(outputs, targets)
        whole = task_loss.detach()
        if not torch.isclose(combined, whole, rtol=1e-4, atol=1e-7):
            raise ValueError(
                f"chunked FAM (chunk={self.chunk}): the batch's loss {float(whole):.6g} is not the {self.loss_reduction} of its "
                f"chunks' losses ({float(combined):.6g}); it needs a per-sample loss (loss_reduction) and no layer that couples "
                "the samples (BatchNorm in training mode, dropout); use chunk=None (fam.chunk: null)"
            )
        # the FAM part is a constant here (its gradient is in .grad already); the value reads as an unchunked step's
        return FAMOutput(task_loss + self.step_lambda * kappa, task_loss, kappa, outputs)

    def __call__(
        self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor
    ) -> FAMOutput:
        """Forward ``inputs``, compute ``loss_fn(outputs, targets)`` and regularize it (in chunks when ``chunk``
        is set and the batch is larger)."""
        if self.chunked(inputs.shape[0]):
            return self.chunked_step(loss_fn, inputs, targets)
        outputs = self.model(inputs)
        out = self.regularize(loss_fn(outputs, targets), outputs)
        out.outputs = outputs
        return out

    def iteration(self, engine: Any, batchdata: dict) -> dict:
        """An ``iteration_update`` for MONAI's ``SupervisedTrainer`` (network = this regularizer's model)."""
        from monai.utils import CommonKeys as Keys

        inputs, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        out = self(engine.loss_function, inputs, targets)
        out.loss.backward()
        engine.optimizer.step()
        kappa = None if out.kappa is None else out.kappa.detach()
        engine.state.output = {
            Keys.IMAGE: inputs,
            Keys.LABEL: targets,
            Keys.PRED: out.outputs,
            Keys.LOSS: out.loss.detach(),
            "task_loss": out.task_loss.detach(),
            "kappa": kappa,
        }
        return engine.state.output

    def state_dict(self) -> dict:
        # which norms are fused is state too: a resumed run must round exactly as the uninterrupted one
        return {"step": self.step, "generator": self.generator.get_state(), "fused": self._fused}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
        if state.get("fused") is not None:
            self._fuse(list(state["fused"]))


def _check_chunkable(model: nn.Module, chunk: int, objective: str, loss_reduction: str) -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (samples per FAM pass) or None, got {chunk}")
    if objective not in ("kappa", "fisher"):
        raise ValueError(f"chunk works with the kappa and fisher objectives, not {objective!r}; use chunk=None")
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    for name, m in unwrap(model).named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0):
            raise ValueError(
                f"chunk: {name} ({type(m).__name__}) couples the samples of a batch, so FAM passes over chunks would not add "
                "up to the batch's; use chunk=None"
            )
