# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Run probe prompts through a model and measure FD and sparsity per layer (``docs/method.md``, "Measuring
monosemanticity").

The probes come from :mod:`.probes`; the hooks, the site resolution and the row pooling are :mod:`trl_decpo.capture`'s;
the proxies are :mod:`.proxies`'. Only the last real token of each prompt makes a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.utils import logging

from ..capture import ActivationCapture, RowIndex, Site, describe_sites, num_decoder_layers, resolve_measurement_sites
from ..utils import check_int
from .probes import (
    forward_kwargs,
    input_device,
    model_max_positions,
    resolve_pad_id,
    right_padded_batches,
    tokenize_prompts,
)
from .proxies import ProxyAccumulator


logger = logging.get_logger(__name__)

# Rows kept per layer before they are added to the accumulators: bounds the memory (O(FLUSH_ROWS * d) per layer,
# whatever the number of prompts) while amortising the accumulator's small operations over many batches.
FLUSH_ROWS = 256


@dataclass
class MonosemanticityReport:
    """FD and sparsity per measured layer of one model on one probe set."""

    layers: list[int]
    num_layers: int  # decoder layers at the site (for relative depth)
    site: str
    num_prompts: int
    fd: dict[int, float]
    sparsity: dict[int, float]
    accumulators: dict[int, ProxyAccumulator] = field(default_factory=dict, repr=False)

    def relative_depth(self, layer: int) -> float:
        return layer / max(self.num_layers - 1, 1)

    def mean(self, metric: str, layers: Sequence[int] | None = None) -> float:
        values = getattr(self, metric)
        chosen = list(values) if layers is None else list(layers)
        return sum(values[layer] for layer in chosen) / len(chosen)

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "num_layers": self.num_layers,
            "num_prompts": self.num_prompts,
            "layers": [
                {
                    "layer": layer,
                    "relative_depth": self.relative_depth(layer),
                    "fd": self.fd[layer],
                    "sparsity": self.sparsity[layer],
                }
                for layer in self.layers
            ],
        }


def measure_monosemanticity(
    model: nn.Module,
    prompts: Sequence,
    tokenizer=None,
    layers: Sequence[int] | None = None,
    site: str | Site | None = None,
    batch_size: int = 8,
    max_length: int | None = 512,
    pad_token_id: int | None = None,
    accelerator=None,
    progress: bool = False,
) -> MonosemanticityReport:
    """FD and activation sparsity per layer over ``prompts`` (one row per prompt: its last real token at the site).

    Args:
        model: a causal LM (bare, PEFT, quantised, or wrapped by DDP); put in eval mode for the measurement and
            restored afterwards; run without gradients.
        prompts: strings, chat message lists or token id lists (see :func:`tokenize_prompts`), at least 2.
        layers: decoder layers to measure (negative ones count from the end); ``None``: all of them.
        site: module path inside a decoder layer; ``None``: the architecture default (``mlp.up_proj`` for Llama).
        accelerator: with several processes, each measures its share of the prompts and the sums are reduced.
        progress: show a tqdm bar over batches.
    """
    check_int("batch_size", batch_size)
    check_int("max_length", max_length, allow_none=True)
    token_lists = tokenize_prompts(prompts, tokenizer, None)
    limit = min(x for x in (max_length, model_max_positions(model), 1 << 62) if x is not None)
    too_long = sum(len(ids) > limit for ids in token_lists)
    if too_long:
        logger.warning(
            f"{too_long} of {len(token_lists)} probe prompts are longer than {limit} tokens (`max_length` "
            f"{max_length}, model positions {model_max_positions(model)}); their last {limit} tokens are measured."
        )
        token_lists = [ids[-limit:] for ids in token_lists]
    if len(token_lists) < 2:
        raise ValueError(f"feature decorrelation needs at least 2 prompts, got {len(token_lists)}")
    sites = resolve_measurement_sites(model, layers, site)
    site, num_layers = describe_sites(sites), num_decoder_layers(model)
    capture = ActivationCapture(sites)

    shard = token_lists
    world = accelerator.num_processes if accelerator is not None else 1
    distributed = world > 1 and len(token_lists) >= world
    if distributed:
        # Every process runs the same number of equally sized batches (sharded models, FSDP / ZeRO-3, need each
        # forward on all processes): shorter shards are topped up with a repeated prompt whose rows are dropped.
        shard = token_lists[accelerator.process_index :: world]
        per_process = -(-len(token_lists) // world)
        shard = shard + [shard[0]] * (per_process - len(shard))
    num_real = len(token_lists[accelerator.process_index :: world]) if distributed else len(shard)

    accumulators = {s.layer: ProxyAccumulator() for s in sites}
    extra = forward_kwargs(model)
    device = input_device(model)
    batches = right_padded_batches(shard, batch_size, resolve_pad_id(tokenizer, pad_token_id), device, last_index=True)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(shard) // batch_size), desc="Measuring monosemanticity", unit="batch")
    buffered: dict[int, list[torch.Tensor]] = {layer: [] for layer in accumulators}
    buffered_rows = 0

    def flush():
        for layer, parts in buffered.items():
            if parts:
                accumulators[layer].update(torch.cat(parts))
                parts.clear()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for input_ids, attention_mask, index, last in batches:
                row_index = RowIndex(
                    "last", input_ids.shape[1], last, num_rows=input_ids.shape[0], batch=input_ids.shape[0]
                )
                with capture.capture(row_index) as rows:
                    model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
                missing = [layer for layer in accumulators if layer not in rows]
                if missing:
                    raise RuntimeError(f"the forward pass never reached the hooked modules of layers {missing}")
                keep = (index < num_real) if num_real < len(shard) else None  # top-up rows exist only when sharded
                for layer, z in rows.items():
                    buffered[layer].append(z if keep is None else z[keep])
                buffered_rows += int(input_ids.shape[0])
                if buffered_rows >= FLUSH_ROWS:  # a few large accumulator updates instead of many small ones
                    flush()
                    buffered_rows = 0
            flush()
    finally:
        model.train(was_training)

    if distributed:
        states = accelerator.reduce({str(k): acc.state() for k, acc in accumulators.items()}, reduction="sum")
        accumulators = {int(k): ProxyAccumulator.from_state(v) for k, v in states.items()}
    ordered = [s.layer for s in sites]
    return MonosemanticityReport(
        layers=ordered,
        num_layers=num_layers,
        site=str(site),
        num_prompts=len(token_lists),
        fd={layer: accumulators[layer].feature_decorrelation() for layer in ordered},
        sparsity={layer: accumulators[layer].activation_sparsity() for layer in ordered},
        accumulators=accumulators,
    )
