# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The penalty of one step from the rows a capture collected: shared by `DecPOTrainer` and `DecorrelationMixin`."""

from __future__ import annotations

import torch

from ..capture import ResolvedSite
from ..capture.ranks import gather_rows
from ..penalty import decorrelation_penalty


def rows_penalty(args):
    """``rows -> penalty`` as the config sets it (``[..., n, d]`` rows, gathered across ranks with
    ``decorrelation_across_ranks``)."""
    options = dict(
        normalize=args.decorrelation_normalize,
        reduction=args.decorrelation_reduction,
        target=args.decorrelation_target,
    )
    across = getattr(args, "decorrelation_across_ranks", False)
    return lambda rows: decorrelation_penalty(gather_rows(rows) if across else rows, **options)


def layer_penalties(
    sites: list[ResolvedSite], rows: dict[int, torch.Tensor], args, training: bool, deferred: frozenset = frozenset()
):
    """Total penalty (summed over layers) and the per-layer values (in ``sites`` order) from the captured rows; refuses
    rows that were never captured, or that carry no gradient in training, except the ``deferred`` layers (captured
    inside a reentrant checkpoint: their gradient comes from :class:`~trl_decpo.capture.PenaltyInjection`)."""
    missing = [site.name for site in sites if site.layer not in rows]
    if missing:
        raise RuntimeError(
            f"The policy forward never reached the hooked modules {missing}; the decorrelation penalty cannot be "
            "computed. Check `decorrelation_site` / `decorrelation_layers`."
        )
    if training and torch.is_grad_enabled():
        no_grad = [s.name for s in sites if not rows[s.layer].requires_grad and s.layer not in deferred]
        if no_grad:
            raise RuntimeError(
                f"The activations captured at {no_grad} carry no gradient, so the decorrelation penalty would "
                "silently do nothing. Usual causes: no trainable parameter lies before the hooked layer, or a forward "
                "without gradients ran before the policy forward inside `compute_loss` (pause the capture around it: "
                "`decorrelation_paused()`)."
            )
    penalty = rows_penalty(args)
    layer_rows = [rows[site.layer] for site in sites]
    if len({tuple(r.shape) for r in layer_rows}) == 1:  # one batched computation (and one gather) for every layer
        per_layer = penalty(torch.stack(layer_rows))
    else:
        per_layer = torch.stack([penalty(r) for r in layer_rows])
    return per_layer.sum(), per_layer
