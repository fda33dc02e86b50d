# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The penalty's gradient under reentrant activation checkpointing, where the captured rows carry none.

Reentrant checkpointing (``torch.utils.checkpoint(..., use_reentrant=True)``, which TRL forces for PEFT under DeepSpeed
ZeRO-3 and older PEFT code paths still default to) runs each checkpointed decoder layer under ``no_grad``; during the
backward it runs the layer again with gradients and back-propagates through that recomputation. A hook inside the layer
therefore captures rows without a graph: the penalty's value is right, its gradient is absent.

:class:`PenaltyInjection` supplies the gradient during the recomputation. Armed after the forward for the layers whose
rows carry no gradient, its hooks wait for the layer's recomputation (gradients on, inside the autograd engine), pool
the recomputed activation with the same row index, compute the layer's penalty from it, and return the activation
through an identity autograd function whose backward hands the penalty the gradient ``factor * m``: ``factor`` is the
weight of the penalty in the trainer's loss (the coefficient, divided for gradient accumulation exactly as the loss
term is) and ``m`` is the gradient that reached the trainer's loss, read by :meth:`PenaltyInjection.probe` on the
loss itself (it includes whatever the backward applies to the loss: gradient accumulation, a loss scaler, DeepSpeed's
scaling). The loss's backward node runs before any layer's recomputation, which lies downstream of it, so ``m`` is
known in time. Megatron-LM attaches its mixture-of-experts auxiliary loss the same way (``MoEAuxLossAutoScaler``).

Each armed layer injects once (a second backward over the same graph finds nothing armed). When the loss's backward
ends, before anything can use the gradients (an optimizer step inside the backward call, as DeepSpeed's), a layer whose
penalty got no gradient raises :class:`RuntimeError` naming it. :meth:`disarm` removes the hooks, which then has to
follow the backward (``DecorrelationMixin.training_step``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .hooks import _HOOK_MARKER
from .rows import RowIndex
from .sites import ResolvedSite


MISSED = (
    "The decorrelation penalty at layers {layers} got no gradient: their rows were captured with gradients off and the "
    "backward never recomputed those layers with gradients. Under reentrant activation checkpointing this happens when "
    "nothing before the layers requires a gradient (with PEFT, call `model.enable_input_require_grads()`, as TRL does "
    "when it applies a `peft_config`; or use `use_reentrant=False`)."
)


def in_backward() -> bool:
    """Whether this code runs inside the autograd engine's backward (a checkpoint's recomputation) with gradients on."""
    return torch.is_grad_enabled() and torch._C._current_graph_task_id() != -1


class _LossProbe(torch.autograd.Function):
    """Identity on the loss; its backward records the gradient that reached the loss."""

    @staticmethod
    def forward(ctx, loss, owner):
        ctx.owner = owner
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx, grad):
        ctx.owner.loss_gradient = grad.detach()
        # runs when this backward ends (after every recomputation), before the caller can use the gradients
        torch.autograd.Variable._execution_engine.queue_callback(ctx.owner.check_delivered)
        return grad, None


class _Inject(torch.autograd.Function):
    """Identity on a layer's activation, and ``d(root)/d(penalty) = factor * m`` for the penalty computed from it."""

    @staticmethod
    def forward(ctx, activation, penalty, owner, factor, layer):
        ctx.owner, ctx.factor, ctx.layer = owner, factor, layer
        ctx.penalty_meta = (penalty.shape, penalty.dtype, penalty.device)
        return activation.clone()  # a new tensor: the layer may modify its output in place

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, device = ctx.penalty_meta
        scale = ctx.owner.loss_gradient
        if scale is None:  # the loss's backward did not run first: the injection cannot know its scale
            raise RuntimeError(
                "The decorrelation penalty's gradient was asked for before the loss's backward ran; backpropagate "
                "the loss that `compute_loss` returned."
            )
        penalty_grad = torch.full(shape, ctx.factor, dtype=dtype, device=device) * scale.to(dtype=dtype, device=device)
        ctx.owner.delivered.add(ctx.layer)
        return grad, penalty_grad, None, None, None


class PenaltyInjection:
    """Adds, during the backward's recomputation of each armed layer, the gradient of ``factor * penalty(rows)``."""

    def __init__(self, sites: list[ResolvedSite]):
        self.sites = {site.layer: site for site in sites}
        self.pending: set[int] = set()  # armed, not yet recomputed
        self.layers: set[int] = set()  # armed in this step
        self.delivered: set[int] = set()  # whose penalty got its gradient
        self.loss_gradient: torch.Tensor | None = None
        self._handles: list = []

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(
        self,
        layers: list[int],
        row_index: RowIndex,
        penalty: Callable[[torch.Tensor], torch.Tensor],
        factor: float,
    ) -> None:
        """Hook ``layers`` until :meth:`disarm`: at its recomputation in the backward, each layer's penalty
        ``penalty(rows)`` gets the gradient ``factor`` times the gradient of the loss passed through :meth:`probe`."""
        self.disarm()
        self.pending, self.layers, self.delivered, self.loss_gradient = set(layers), set(layers), set(), None
        for layer in layers:
            resolved = self.sites[layer]
            hook = self._make_hook(layer, row_index, penalty, float(factor))
            if resolved.site.capture_input:
                self._handles.append(resolved.module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                self._handles.append(resolved.module.register_forward_hook(hook))

    def probe(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` unchanged, with a backward node that records the gradient reaching it."""
        return _LossProbe.apply(loss, self)

    def missed(self) -> list[int]:
        """The layers armed in this step whose penalty got no gradient (yet)."""
        return sorted(self.layers - self.delivered)

    def check_delivered(self) -> None:
        """Raise, naming the layers, if an armed layer's penalty got no gradient (queued at the end of the backward)."""
        if self.missed():
            raise RuntimeError(MISSED.format(layers=self.missed()))

    def disarm(self) -> list[int]:
        """Remove the hooks; returns the layers that were armed and whose penalty got no gradient."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        missed = self.missed()
        self.pending, self.layers, self.delivered = set(), set(), set()
        return missed

    def _make_hook(self, layer: int, row_index: RowIndex, penalty, factor: float):
        def inject(tensor: torch.Tensor) -> torch.Tensor | None:
            if layer not in self.pending or not in_backward():
                return None
            self.pending.discard(layer)
            rows = row_index.pool(tensor)
            if not rows.requires_grad:
                raise RuntimeError(
                    f"The activations recomputed at decoder layer {layer} carry no gradient either: no trainable "
                    "parameter lies before it, so the decorrelation penalty cannot change any weight."
                )
            return _Inject.apply(tensor, penalty(rows), self, factor, layer)

        if self.sites[layer].site.capture_input:

            def pre_hook(module, args, kwargs):
                for i, value in enumerate(args):
                    if isinstance(value, torch.Tensor):
                        new = inject(value)
                        return None if new is None else ((*args[:i], new, *args[i + 1 :]), kwargs)
                for key, value in kwargs.items():
                    if isinstance(value, torch.Tensor):
                        new = inject(value)
                        return None if new is None else (args, {**kwargs, key: new})
                return None

            setattr(pre_hook, _HOOK_MARKER, True)
            return pre_hook

        def hook(module, args, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            new = inject(tensor)
            if new is None:
                return None
            if isinstance(output, tuple):
                return (new, *output[1:])
            if isinstance(output, list):
                return [new, *output[1:]]
            return new

        setattr(hook, _HOOK_MARKER, True)
        return hook
