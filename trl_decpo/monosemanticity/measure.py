# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Run probe prompts through a model and measure FD, its control and sparsity per layer (``docs/method.md``,
"Measuring monosemanticity").

The probes and their pooling come from :mod:`.probes`; the hooks and the site resolution are :mod:`trl_decpo.capture`'s;
the proxies are :mod:`.proxies`'. Each prompt makes one row: its last token, its last content token, or the mean over
its tokens (``pooling``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.utils import logging

from ..capture import ActivationCapture, RowIndex, Site, describe_sites, num_decoder_layers, resolve_measurement_sites
from ..utils import check_choice, check_int
from .probes import (
    PROBE_POOLING_CHOICES,
    ProbeSet,
    forward_kwargs,
    input_device,
    model_max_positions,
    prepare_probes,
    resolve_pad_id,
    right_padded_batches,
)
from .proxies import ProxyAccumulator


logger = logging.get_logger(__name__)

# Rows kept per layer before they are added to the accumulators: bounds the memory (O(FLUSH_ROWS * d) per layer,
# whatever the number of prompts) while amortising the accumulator's small operations over many batches.
FLUSH_ROWS = 256

# The per-layer values a report holds, in the order tables show them.
METRICS = ("fd", "control", "participation_ratio", "sparsity")


@dataclass
class MonosemanticityReport:
    """FD, its control, the participation ratio and sparsity per measured layer of one model on one probe set.

    ``control`` (``1 - mean_{i != j} cos^2`` of the mean-centred rows) and ``participation_ratio`` are ``None`` per
    layer when the measurement did not keep the rows (``keep_rows=False``). With the rows kept, the accumulators give
    them in prompt order (:meth:`rows`), their Gram (:meth:`gram`) and per-row sparsity (:meth:`row_sparsity`) for a
    bootstrap over probes (:mod:`trl_decpo.evaluation.stats`).
    """

    layers: list[int]
    num_layers: int  # decoder layers at the site (for relative depth)
    site: str
    num_prompts: int
    fd: dict[int, float]
    sparsity: dict[int, float]
    accumulators: dict[int, ProxyAccumulator] = field(default_factory=dict, repr=False)
    control: dict[int, float | None] = field(default_factory=dict)
    participation_ratio: dict[int, float | None] = field(default_factory=dict)
    pooling: str = "last"

    def relative_depth(self, layer: int) -> float:
        return layer / max(self.num_layers - 1, 1)

    def mean(self, metric: str, layers: Sequence[int] | None = None) -> float | None:
        """Mean of ``metric`` (one of ``fd``, ``control``, ``participation_ratio``, ``sparsity``) over ``layers``
        (default: all measured); ``None`` when the metric was not computed."""
        check_choice("metric", metric, METRICS)
        values = getattr(self, metric)
        chosen = list(self.layers) if layers is None else list(layers)
        picked = [values.get(layer) for layer in chosen]
        if any(v is None for v in picked):
            return None
        return sum(picked) / len(picked)

    def rows(self, layer: int) -> torch.Tensor:
        """The rows ``[N, d]`` of ``layer`` in prompt order (needs ``keep_rows=True``, the default)."""
        return self.accumulators[layer].rows()

    def gram(self, layer: int) -> torch.Tensor:
        """The float64 ``[N, N]`` Gram ``z z^T`` of ``layer``'s rows in prompt order."""
        return self.accumulators[layer].gram()

    def row_sparsity(self, layer: int) -> torch.Tensor:
        """Each prompt's sparsity (variance across hidden dimensions) at ``layer``, in prompt order."""
        return self.accumulators[layer].row_sparsity()

    def save(self, output_dir: str, model: str | None = None, plot: bool = True) -> list[str]:
        """Write ``monosemanticity.json`` (with ``model``, its name or path), ``.csv`` and (``plot``) ``.png`` of the
        depth profile into ``output_dir`` (created if missing); returns the paths written."""
        from .loading import display_name
        from .plotting import plot_depth_profiles
        from .tables import report_table, save_results

        name = display_name(model) if model else "model"
        title = f"{name} ({self.site}, {self.num_prompts} prompts)"
        draw = (lambda path: plot_depth_profiles({name: self.to_dict()}, path, title=title)) if plot else None
        return save_results(
            output_dir, "monosemanticity", {"model": model, **self.to_dict()}, report_table(self), draw
        )

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "num_layers": self.num_layers,
            "num_prompts": self.num_prompts,
            "pooling": self.pooling,
            "layers": [
                {
                    "layer": layer,
                    "relative_depth": self.relative_depth(layer),
                    **{metric: getattr(self, metric).get(layer) for metric in METRICS},
                }
                for layer in self.layers
            ],
        }


class _MeanRows(RowIndex):
    """Mean pooling summed in float32 at least (a bfloat16 sum over hundreds of tokens would lose the mean)."""

    def pool(self, acts: torch.Tensor) -> torch.Tensor:
        return super().pool(acts.float() if acts.dtype in (torch.float16, torch.bfloat16) else acts)


def _row_index(pooling: str, attention_mask: torch.Tensor, last: torch.Tensor, trailing: torch.Tensor) -> RowIndex:
    """The tokens that make each row of a right-padded batch: ``last - trailing`` (flat indices), or all real tokens."""
    batch, width = attention_mask.shape
    if pooling == "mean":
        token_index = (attention_mask.reshape(-1) != 0).nonzero().squeeze(1)
        counts = attention_mask.sum(1)
        return _MeanRows("mean", width, token_index, token_index // width, counts, num_rows=batch, batch=batch)
    return RowIndex("last", width, last - trailing, num_rows=batch, batch=batch)


def _gather_rows(accelerator, accumulator: ProxyAccumulator, global_index, per_process: int) -> torch.Tensor:
    """All processes' rows of one layer, in prompt order (each process kept its shard's rows; top-ups were dropped)."""
    rows, index = accumulator.rows_and_index()
    index = global_index(index)
    padded = torch.zeros(per_process, rows.shape[1], dtype=rows.dtype)
    padded_index = torch.full((per_process,), -1, dtype=torch.long)  # equal shapes on every process: pad, mark -1
    padded[: len(rows)], padded_index[: len(rows)] = rows, index
    device = getattr(accelerator, "device", "cpu")
    all_rows = accelerator.gather(padded.to(device)).cpu()
    all_index = accelerator.gather(padded_index.to(device)).cpu()
    keep = all_index >= 0
    ordered = torch.empty(int(keep.sum()), rows.shape[1], dtype=rows.dtype)
    ordered[all_index[keep]] = all_rows[keep]
    return ordered


def measure_monosemanticity(
    model: nn.Module,
    prompts: Sequence | ProbeSet,
    tokenizer=None,
    layers: Sequence[int] | None = None,
    site: str | Site | None = None,
    batch_size: int = 8,
    max_length: int | None = 512,
    pad_token_id: int | None = None,
    accelerator=None,
    progress: bool = False,
    pooling: str = "auto",
    keep_rows: bool = True,
) -> MonosemanticityReport:
    """FD, its control, the participation ratio and activation sparsity per layer over ``prompts`` (one row per
    prompt, pooled at the site as ``pooling`` says).

    Args:
        model: a causal LM (bare, PEFT, quantised, or wrapped by DDP); put in eval mode for the measurement and
            restored afterwards; run without gradients.
        prompts: strings, chat message lists or token id lists (see :func:`prepare_probes`), at least 2; or a
            :class:`ProbeSet` already prepared (tokenized once for several models).
        layers: decoder layers to measure (negative ones count from the end); ``None``: all of them.
        site: module path inside a decoder layer; ``None``: the architecture default (``mlp.up_proj`` for Llama).
        accelerator: with several processes, each measures its share of the prompts; the sums are reduced and the rows
            gathered in prompt order.
        progress: show a tqdm bar over batches.
        pooling: which tokens make a prompt's row: ``"last"``, ``"mean"``, ``"last_content"`` (the last token of the
            last message's content, before the chat template's generation suffix) or ``"auto"`` (``last_content`` for
            chat probes, ``last`` for text and token ids); see :func:`prepare_probes`.
        keep_rows: keep every row (on the CPU, N x d x 4 bytes per layer) to compute the control and the
            participation ratio and to give the rows and their Gram; ``False``: FD and sparsity only, in O(d) memory
            per layer.
    """
    check_choice("pooling", pooling, PROBE_POOLING_CHOICES)
    check_int("batch_size", batch_size)
    check_int("max_length", max_length, allow_none=True)
    if isinstance(prompts, ProbeSet):
        if pooling not in ("auto", prompts.pooling):
            raise ValueError(f"`pooling` {pooling!r} differs from the prepared probes' {prompts.pooling!r}")
        probes = prompts
    else:
        probes = prepare_probes(prompts, tokenizer, None, pooling)
    limit = min(x for x in (max_length, model_max_positions(model), 1 << 62) if x is not None)
    too_long = sum(len(ids) > limit for ids in probes.token_ids)
    if too_long:
        logger.warning(
            f"{too_long} of {len(probes)} probe prompts are longer than {limit} tokens (`max_length` "
            f"{max_length}, model positions {model_max_positions(model)}); their last {limit} tokens are measured."
        )
        probes = probes.keep_last(limit)
    if len(probes) < 2:
        raise ValueError(f"feature decorrelation needs at least 2 prompts, got {len(probes)}")
    sites = resolve_measurement_sites(model, layers, site)
    site, num_layers = describe_sites(sites), num_decoder_layers(model)
    capture = ActivationCapture(sites)

    order = list(range(len(probes)))
    world = accelerator.num_processes if accelerator is not None else 1
    distributed = world > 1 and len(probes) >= world
    per_process = len(order)
    if distributed:
        # Every process runs the same number of equally sized batches (sharded models, FSDP / ZeRO-3, need each
        # forward on all processes): shorter shards are topped up with a repeated prompt whose rows are dropped.
        order = order[accelerator.process_index :: world]
        per_process = -(-len(probes) // world)
    num_real = len(order)
    order = order + [order[0]] * (per_process - num_real)
    shard = [probes.token_ids[i] for i in order]
    trailing = torch.tensor([probes.trailing[i] for i in order])

    accumulators = {s.layer: ProxyAccumulator(keep_rows=keep_rows) for s in sites}
    extra = forward_kwargs(model)
    device = input_device(model)
    trailing = trailing.to(device)
    batches = right_padded_batches(shard, batch_size, resolve_pad_id(tokenizer, pad_token_id), device, last_index=True)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(shard) // batch_size), desc="Measuring monosemanticity", unit="batch")
    buffered: dict[int, list[torch.Tensor]] = {layer: [] for layer in accumulators}
    buffered_index: list[torch.Tensor] = []
    buffered_rows = 0

    def flush():
        index = torch.cat(buffered_index) if buffered_index else None
        for layer, parts in buffered.items():
            if parts:
                accumulators[layer].update(torch.cat(parts), index)
                parts.clear()
        buffered_index.clear()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for input_ids, attention_mask, index, last in batches:
                row_index = _row_index(probes.pooling, attention_mask, last, trailing[index])
                with capture.capture(row_index) as rows:
                    model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
                missing = [layer for layer in accumulators if layer not in rows]
                if missing:
                    raise RuntimeError(f"the forward pass never reached the hooked modules of layers {missing}")
                keep = (index < num_real) if num_real < len(shard) else None  # top-up rows exist only when sharded
                for layer, z in rows.items():
                    buffered[layer].append(z if keep is None else z[keep])
                buffered_index.append(index if keep is None else index[keep])
                buffered_rows += int(input_ids.shape[0])
                if buffered_rows >= FLUSH_ROWS:  # a few large accumulator updates instead of many small ones
                    flush()
                    buffered_rows = 0
            flush()
    finally:
        model.train(was_training)

    if distributed:
        states = accelerator.reduce({str(k): acc.state() for k, acc in accumulators.items()}, reduction="sum")
        rank = accelerator.process_index
        gathered = {
            layer: _gather_rows(accelerator, acc, lambda i: rank + i * world, per_process) if keep_rows else None
            for layer, acc in accumulators.items()
        }
        accumulators = {int(k): ProxyAccumulator.from_state(v, gathered[int(k)]) for k, v in states.items()}
    ordered = [s.layer for s in sites]
    return MonosemanticityReport(
        layers=ordered,
        num_layers=num_layers,
        site=str(site),
        num_prompts=len(probes),
        fd={layer: accumulators[layer].feature_decorrelation() for layer in ordered},
        sparsity={layer: accumulators[layer].activation_sparsity() for layer in ordered},
        accumulators=accumulators,
        control={layer: accumulators[layer].control(device) if keep_rows else None for layer in ordered},
        participation_ratio={
            layer: accumulators[layer].participation_ratio(device) if keep_rows else None for layer in ordered
        },
        pooling=probes.pooling,
    )
