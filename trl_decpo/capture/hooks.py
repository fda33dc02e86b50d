# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Hooks: capture the rows of one forward pass.

:class:`ActivationCapture` registers forward hooks for exactly the duration of a ``with`` block and keeps only the
first call of each hooked module inside it (the policy forward); later calls (the reference forward of a PEFT model
with its adapter disabled, an extra forward) are counted and ignored. Hooks are always removed on exit, even when the
block raises, so nothing is ever left on a saved or pushed model.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch import nn

from .rows import RowIndex
from .sites import ResolvedSite


_HOOK_MARKER = "_trl_decpo_hook"


def _identity(tensor):
    return tensor


class ActivationCapture:
    """Captures pooled rows at the resolved sites during the first forward pass inside :meth:`capture`.

    ``stats`` counts, over the object's life, the hook calls that were captured (``"captured"``), those ignored
    because their module had already been captured in the same block (``"ignored"``: e.g. the reference forward of a
    PEFT model with its adapter disabled), and those skipped inside :meth:`paused` (``"paused"``). ``without_grad``:
    the layers of the last block whose rows were captured with gradients off (inside a reentrant checkpoint, or a
    measurement forward).
    """

    def __init__(self, sites: list[ResolvedSite]):
        if not sites:
            raise ValueError("ActivationCapture needs at least one site")
        self.sites = sites
        self.stats: Counter = Counter()
        self._active = False
        self._paused = False
        self.without_grad: set[int] = set()

    @contextmanager
    def paused(self):
        """Inside :meth:`capture`, the forwards of this block are skipped: not captured, and not the "first call" either
        (counted as ``"paused"``), e.g. KTO's no-grad policy forward over its KL batch, which precedes the policy forward
        with gradients."""
        was_paused, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was_paused

    @contextmanager
    def capture(self, row_index: RowIndex):
        """Hooks live only inside this block; yields ``{layer: rows}``, filled by the first forward of the block."""
        if self._active:
            raise RuntimeError("ActivationCapture.capture() is not re-entrant")
        rows: dict[int, torch.Tensor] = {}
        handles = []
        self._active = True
        self.without_grad = set()
        try:
            for resolved in self.sites:
                hook = self._make_hook(resolved, row_index, rows)
                if resolved.site.capture_input:
                    handles.append(resolved.module.register_forward_pre_hook(hook, with_kwargs=True))
                else:
                    handles.append(resolved.module.register_forward_hook(hook))
            yield rows
        finally:
            for handle in handles:
                handle.remove()
            self._active = False

    def _make_hook(self, resolved: ResolvedSite, row_index: RowIndex, rows: dict[int, torch.Tensor]):
        layer = resolved.layer
        stats = self.stats

        def take(tensor):
            if self._paused:
                stats["paused"] += 1
                return
            if layer in rows:
                stats["ignored"] += 1
                return
            if isinstance(tensor, (tuple, list)):
                tensor = tensor[0]
            # The pooling ops run inside the checkpointed region of the layer (non-reentrant activation
            # checkpointing). Identity saved-tensor hooks keep what they save out of the checkpoint's bookkeeping, so
            # the recomputation during backward, which runs without this hook, saves the same tensors as the original
            # forward.
            if torch.is_grad_enabled():
                with torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
                    rows[layer] = row_index.pool(tensor)
            else:  # nothing is saved for backward (measurement forwards, a reentrant checkpoint's first forward)
                rows[layer] = row_index.pool(tensor)
                self.without_grad.add(layer)
            stats["captured"] += 1

        if resolved.site.capture_input:

            def pre_hook(module, args, kwargs):
                tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                take(tensors[0])

            setattr(pre_hook, _HOOK_MARKER, True)
            return pre_hook

        def hook(module, args, output):
            take(output)

        setattr(hook, _HOOK_MARKER, True)
        return hook


def count_decpo_hooks(model: nn.Module) -> int:
    """How many forward (pre-)hooks registered by trl-decpo are on ``model`` and its submodules."""
    count = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            count += sum(1 for fn in hooks.values() if getattr(fn, _HOOK_MARKER, False))
    return count
