# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Rows across ranks: one Gram over the pooled rows of every data-parallel process (``decorrelation_across_ranks``).

Per rank, a micro-batch of ``per_device_train_batch_size`` pairs gives a Gram of few rows (2 to 4 at batch size 1 or
2, where the penalty is little more than the cosine of the chosen and the rejected sequence). :func:`gather_rows`
concatenates the rows of every rank, in rank order, with a gradient: ``torch.distributed.nn.functional.all_gather``
sums, in the backward, each rank's gradient of the (identical) global penalty into the rows it came from, so after
the data-parallel average of the gradients (DDP, FSDP, ZeRO) the step's gradient is exactly that of the penalty of the
global batch, as one process holding every row would compute it. Ranks may hold different numbers of rows: each pads
to the largest count for the collective and the padding is cut off again before the Gram (zero rows would bias the
``features`` target's centring).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def world_size() -> int:
    """The number of processes of the default process group (1 when there is none)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """``[..., n_r, d]`` rows of this rank -> ``[..., sum_r n_r, d]`` rows of every rank (rank order), differentiable
    (leading dimensions, such as stacked layers, gathered in the same collective). Every rank must call it, the same
    number of times in the same order; with one process it returns ``rows``. One host sync (the row counts)."""
    if world_size() == 1:
        return rows
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    count = torch.tensor([rows.shape[-2]], dtype=torch.long, device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = F.pad(rows, (0, 0, 0, max(counts) - rows.shape[-2]))
    with warnings.catch_warnings():  # torch 2.13 points to a functional collective without gloo's all_gather support
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather.*")
        parts = all_gather(padded)
    return torch.cat([part[..., :n, :] for part, n in zip(parts, counts, strict=True)], dim=-2)
