# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Every real token's activations at a site, for instruments that need many rows (an SAE trains on tokens, not on
one pooled row per prompt): the same probes, sites and hooks as :func:`~trl_decpo.measure_monosemanticity`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..capture import ActivationCapture, RowIndex, resolve_measurement_sites
from ..utils import check_int
from .probes import ProbeSet, forward_kwargs, input_device, prepare_probes, resolve_pad_id, right_padded_batches


def check_sae_layer(model: nn.Module, layer: int, site: str | None = None) -> None:
    """A one-line ``ValueError`` naming the SAE's layer when ``model`` has no measurable site there (checked before
    anything is measured, not after the base model's measurement)."""
    try:
        resolve_measurement_sites(model, [layer], site)
    except ValueError as err:
        raise ValueError(f"the SAE's `layer` {layer}: {err}") from err


def content_spans(probes: ProbeSet) -> list[tuple[int, int]]:
    """Each probe's ``[start, end)`` token range without the tokens every probe shares: the longest common prefix of
    all probes (BOS, a chat template's system turn and opening) and the probe's trailing tokens after its content (a
    chat template's generation prompt). Such tokens have the same activation in every probe of a causal model."""
    prefix = len(os.path.commonprefix([list(ids) for ids in probes.token_ids])) if len(probes) > 1 else 0
    return [
        (min(prefix, len(ids)), len(ids) - trailing)
        for ids, trailing in zip(probes.token_ids, probes.trailing, strict=True)
    ]


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
    content_only: bool = False,
) -> dict[int, torch.Tensor]:
    """``{layer: [T, d] float32 on the CPU}``: the activation of every real (not padding) token of ``prompts`` at the
    site of each of ``layers`` (as :func:`~trl_decpo.measure_monosemanticity` resolves them), prompts in order and
    tokens in order within a prompt; at most ``max_rows`` tokens (the first ones: only the prompts needed are run).
    ``content_only`` leaves out the tokens every prompt shares (:func:`content_spans`). ``max_length`` keeps the last
    tokens of each prompt. The model runs in eval mode without gradients and is restored afterwards."""
    check_int("batch_size", batch_size)
    check_int("max_length", max_length, allow_none=True)
    check_int("max_rows", max_rows, allow_none=True)
    probes = prompts if isinstance(prompts, ProbeSet) else prepare_probes(prompts, tokenizer, None, "auto")
    if max_length is not None:
        probes = probes.keep_last(max_length)
    spans = content_spans(probes) if content_only else [(0, len(ids)) for ids in probes.token_ids]
    chosen, total = [], 0
    for i, (start, end) in enumerate(spans):  # the prompts in order, until max_rows tokens are reached
        if max_rows is not None and total >= max_rows:
            break
        if end > start:
            chosen.append(i)
            total += end - start
    if not chosen:
        raise ValueError(
            "the prompts have no tokens to capture (with `content_only`, no token that not every prompt shares)"
        )
    token_lists = [probes.token_ids[i] for i in chosen]
    starts = torch.tensor([spans[i][0] for i in chosen], dtype=torch.long)
    ends = torch.tensor([spans[i][1] for i in chosen], dtype=torch.long)
    capture = ActivationCapture(resolve_measurement_sites(model, layers, site))
    pad_id, device, extra = resolve_pad_id(tokenizer, pad_token_id), input_device(model), forward_kwargs(model)
    parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    was_training = model.training
    model.eval()
    try:
        for input_ids, attention_mask, index, *_ in right_padded_batches(token_lists, batch_size, pad_id, device):
            batch, width = attention_mask.shape
            position = torch.arange(width, device=attention_mask.device).expand(batch, width)
            row_start, row_end = starts.to(index.device)[index, None], ends.to(index.device)[index, None]
            keep = (attention_mask != 0) & (position >= row_start) & (position < row_end)
            tokens = keep.reshape(-1).nonzero().squeeze(1)
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
