# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The penalty of one step from the rows a capture collected: shared by `DecPOTrainer` and `DecorrelationMixin`."""

from __future__ import annotations

import torch

from ..capture import ResolvedSite
from ..penalty import decorrelation_penalty


def layer_penalties(sites: list[ResolvedSite], rows: dict[int, torch.Tensor], args, training: bool):
    """Total penalty (summed over layers) and the per-layer values (in ``sites`` order) from the captured rows; refuses
    rows that were never captured, or that carry no gradient in training."""
    missing = [site.name for site in sites if site.layer not in rows]
    if missing:
        raise RuntimeError(
            f"The policy forward never reached the hooked modules {missing}; the decorrelation penalty cannot be "
            "computed. Check `decorrelation_site` / `decorrelation_layers`."
        )
    if training and torch.is_grad_enabled():
        no_grad = [site.name for site in sites if not rows[site.layer].requires_grad]
        if no_grad:
            raise RuntimeError(
                f"The activations captured at {no_grad} carry no gradient, so the decorrelation penalty would "
                "silently do nothing. Usual causes: reentrant activation checkpointing enabled on the model "
                "(use `use_reentrant=False`), or no trainable parameter before the hooked layer."
            )
    options = dict(
        normalize=args.decorrelation_normalize,
        reduction=args.decorrelation_reduction,
        target=args.decorrelation_target,
    )
    layer_rows = [rows[site.layer] for site in sites]
    if len({tuple(r.shape) for r in layer_rows}) == 1:
        per_layer = decorrelation_penalty(torch.stack(layer_rows), **options)
    else:
        per_layer = torch.stack([decorrelation_penalty(r, **options) for r in layer_rows])
    return per_layer.sum(), per_layer
