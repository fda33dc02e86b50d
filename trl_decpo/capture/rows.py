# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Rows: which token positions of a batch make the rows of ``z``.

:func:`build_row_index` turns the batch masks (right or left padding, or packed ``position_ids``) into the token
indices that make the rows: the last real token of each sequence, the mean over its completion tokens, or every
completion token; :meth:`RowIndex.pool` applies them to a hooked module's ``[B, T, d]`` activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils import check_choice


POOLING_CHOICES = ("last", "mean", "tokens")
SEQUENCES_CHOICES = ("chosen", "rejected", "both")


@dataclass
class RowIndex:
    """Flat token indices (into ``acts.reshape(-1, d)``) that make the rows of ``z`` for one batch."""

    pooling: str
    seq_len: int  # T of the input ids; activations are aligned on the right (prompt-learning PEFT prepends tokens)
    token_index: torch.Tensor  # [m] flat indices of the tokens used
    segment: torch.Tensor | None = None  # [m] row of each token ("mean" only)
    counts: torch.Tensor | None = None  # [rows] tokens per row ("mean" only)
    num_rows: int = 0
    max_rows: int | None = None
    batch: int | None = None  # B of the input ids (to unflatten activations that a model flattened to [B * T, d])

    def pool(self, acts: torch.Tensor) -> torch.Tensor:
        """``[B, T', d]`` activations (or ``[B * T', d]``, as OPT flattens them before its MLP) to ``[rows, d]``."""
        if acts.dim() == 2:
            batch = self.batch or 1
            if acts.shape[0] % batch:
                raise ValueError(
                    f"cannot pool activations of shape {tuple(acts.shape)}: a batch of {batch} sequences of "
                    f"{self.seq_len} tokens was expected"
                )
            acts = acts.reshape(batch, -1, acts.shape[-1])
        if acts.shape[1] != self.seq_len:
            acts = acts[:, -self.seq_len :]
        flat = acts.reshape(-1, acts.shape[-1])
        picked = flat.index_select(0, self.token_index)
        if self.pooling == "mean":
            summed = torch.zeros(self.num_rows, flat.shape[-1], dtype=flat.dtype, device=flat.device)
            summed = summed.index_add(0, self.segment, picked)
            return summed / self.counts.to(summed.dtype).unsqueeze(1)
        return picked


def _sequence_ids(
    batch: int,
    seq_len: int,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, int]:
    """Per flat token: the index of its sequence, or -1 for padding; and the number of sequences.

    Padded batches: one sequence per row, real tokens from ``attention_mask`` (either padding side). Packed batches
    (``padding_free``: ``position_ids`` restart at 0 more often than once per row, no attention mask): a new sequence
    starts wherever ``position_ids == 0``, in row-major order.
    """
    if position_ids is not None and attention_mask is None:
        starts = position_ids.reshape(-1) == 0
        num_sequences = int(starts.sum())  # one host sync, packed batches only
        if num_sequences > batch:
            return torch.cumsum(starts.long(), 0) - 1, num_sequences
    rows = torch.arange(batch, device=device).unsqueeze(1).expand(batch, seq_len)
    if attention_mask is not None:
        rows = rows.masked_fill(attention_mask == 0, -1)
    return rows.reshape(-1), batch


def build_row_index(
    pooling: str,
    sequences: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    max_rows: int | None = None,
) -> RowIndex:
    """The token positions that make the rows, from the batch of a preference trainer.

    The batch holds ``[chosen; rejected]``: the first half of its sequences are the chosen ones. ``pooling="last"``
    takes the last real (non-pad) token of each selected sequence; ``"mean"`` averages its completion tokens (all real
    tokens when there is no ``completion_mask``; a sequence without any gives a zero row); ``"tokens"`` makes every
    completion token a row, evenly subsampled down to ``max_rows`` when there are more.
    """
    check_choice("decorrelation_pooling", pooling, POOLING_CHOICES)
    check_choice("decorrelation_sequences", sequences, SEQUENCES_CHOICES)
    batch, seq_len = input_ids.shape
    device = input_ids.device
    if pooling == "last" and sequences == "both" and position_ids is None:
        # Padded batch, one sequence per row: the last real token is the largest position with a nonzero mask.
        positions = torch.arange(seq_len, device=device)
        last = positions.expand(batch, seq_len) if attention_mask is None else positions * (attention_mask != 0)
        token_index = torch.arange(batch, device=device) * seq_len + last.amax(1)
        return RowIndex(pooling, seq_len, token_index, num_rows=batch, batch=batch)
    seq_ids, num_sequences = _sequence_ids(batch, seq_len, attention_mask, position_ids, device)
    if sequences == "both":
        first, last = 0, num_sequences
    else:
        if num_sequences % 2:
            raise ValueError(
                f"`decorrelation_sequences={sequences!r}` needs a [chosen; rejected] batch with an even number of "
                f"sequences, got {num_sequences}"
            )
        half = num_sequences // 2
        first, last = (0, half) if sequences == "chosen" else (half, num_sequences)
    num_rows = last - first
    selected = (seq_ids >= first) & (seq_ids < last)
    positions = torch.arange(seq_ids.numel(), device=device)

    if pooling == "last":
        last_pos = torch.full((num_sequences,), -1, dtype=torch.long, device=device)
        last_pos = last_pos.scatter_reduce(0, seq_ids.clamp_min(0)[selected], positions[selected], "amax")
        return RowIndex(pooling, seq_len, last_pos[first:last].clamp_min(0), num_rows=num_rows, batch=batch)

    token_mask = selected
    if completion_mask is not None:
        token_mask = token_mask & (completion_mask.reshape(-1) != 0)
    if pooling == "mean":
        token_index = positions[token_mask]
        segment = seq_ids[token_mask] - first
        counts = torch.zeros(num_rows, dtype=torch.long, device=device).index_add(0, segment, torch.ones_like(segment))
        return RowIndex(pooling, seq_len, token_index, segment, counts.clamp_min(1), num_rows=num_rows, batch=batch)

    token_index = positions[token_mask]
    if max_rows is not None and token_index.numel() > max_rows:
        keep = torch.linspace(0, token_index.numel() - 1, max_rows, device=device).round().long()
        token_index = token_index[keep]
    return RowIndex(pooling, seq_len, token_index, num_rows=token_index.numel(), max_rows=max_rows, batch=batch)
