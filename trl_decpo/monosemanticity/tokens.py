# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Every real token's activations at a site, for instruments that need many rows (an SAE trains on tokens, not on
one pooled row per prompt): the same probes, sites and hooks as :func:`~trl_decpo.measure_monosemanticity`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..capture import ActivationCapture, RowIndex, resolve_measurement_sites
from ..utils import check_int
from .probes import ProbeSet, forward_kwargs, input_device, prepare_probes, resolve_pad_id, right_padded_batches


@torch.no_grad()
def token_activations(
    model: nn.Module,
    prompts: Sequence | ProbeSet,
    tokenizer=None,
    layers: Sequence[int] | None = None,
    site: str | None = None,
    batch_size: int = 8,
    max_length: int | None = 512,
    max_rows: int | None = None,
    pad_token_id: int | None = None,
) -> dict[int, torch.Tensor]:
    """``{layer: [T, d] float32 on the CPU}``: the activation of every real (not padding) token of ``prompts`` at the
    site of each of ``layers`` (as :func:`~trl_decpo.measure_monosemanticity` resolves them), prompts in order and
    tokens in order within a prompt; at most ``max_rows`` tokens (the first ones). ``max_length`` keeps the last tokens
    of each prompt. The model runs in eval mode without gradients and is restored afterwards."""
    check_int("batch_size", batch_size)
    check_int("max_length", max_length, allow_none=True)
    check_int("max_rows", max_rows, allow_none=True)
    probes = prompts if isinstance(prompts, ProbeSet) else prepare_probes(prompts, tokenizer, None, "last")
    if max_length is not None:
        probes = probes.keep_last(max_length)
    capture = ActivationCapture(resolve_measurement_sites(model, layers, site))
    pad_id, device, extra = resolve_pad_id(tokenizer, pad_token_id), input_device(model), forward_kwargs(model)
    parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    was_training = model.training
    model.eval()
    try:
        for input_ids, attention_mask, index, *_ in right_padded_batches(probes.token_ids, batch_size, pad_id, device):
            batch, width = attention_mask.shape
            tokens = (attention_mask.reshape(-1) != 0).nonzero().squeeze(1)
            rows = RowIndex("tokens", width, tokens, num_rows=len(tokens), batch=batch)
            with capture.capture(rows) as captured:
                model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
            order = (index[tokens // width] * (1 << 32) + tokens % width).cpu()  # prompt, then position
            for layer, z in captured.items():
                parts.setdefault(layer, []).append((order, z.detach().float().cpu()))
    finally:
        model.train(was_training)
    result = {}
    for layer, pieces in parts.items():
        order = torch.cat([o for o, _ in pieces])
        rows = torch.cat([z for _, z in pieces])[torch.argsort(order)]
        result[layer] = rows[:max_rows] if max_rows is not None else rows
    return result
