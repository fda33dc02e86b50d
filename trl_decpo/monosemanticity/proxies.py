# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Monosemanticity proxies as pure tensor math (docs/method.md): no model, no hooks, no Trainer.

* :func:`feature_decorrelation`: ``FD = 1 - mean_{i != j} cos(z_i, z_j)`` over the rows of ``z`` (one row per prompt),
  exact in O(N d) from the sum of the unit rows; :class:`ProxyAccumulator` streams it (and the sparsity) batch by batch.
* :func:`activation_sparsity`: the variance across the hidden dimensions of each row, averaged over rows.
* :func:`neuron_weight_scores` / :func:`weight_proxy_values`: the Gurnee et al. weight proxy for MLPs with an input bias.

Conventions. The variance is the population variance (divide by ``d``). A zero row has no direction: its cosine with
anything is 0 (as ``torch.nn.functional.cosine_similarity`` gives), it still counts as a prompt in ``N``. Everything is
accumulated in float64, whatever the activation dtype.
"""

from __future__ import annotations

import torch

from ..utils import check_int


_EPS = 1e-12


def _unit_rows(z: torch.Tensor) -> torch.Tensor:
    z = z.detach().to(torch.float64)
    norms = z.norm(dim=1, keepdim=True)
    return torch.where(norms > _EPS, z / norms.clamp_min(_EPS), torch.zeros_like(z))


def _check_rows(z: torch.Tensor, what: str) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{what} needs a 2-D tensor of rows [num_prompts, hidden], got {shape}")


def feature_decorrelation(z: torch.Tensor) -> float:
    """``1 - mean_{i != j} cos(z_i, z_j)`` over the rows of ``z`` ([N, d], N >= 2). Higher = more monosemantic.

    Uses ``sum_{i != j} cos(z_i, z_j) = ||sum_i u_i||^2 - sum_i ||u_i||^2`` with ``u_i = z_i / ||z_i||``: no N x N matrix.
    """
    _check_rows(z, "feature_decorrelation")
    acc = ProxyAccumulator()
    acc.update(z)
    return acc.feature_decorrelation()


def activation_sparsity(z: torch.Tensor) -> float:
    """The variance across hidden dimensions of each row of ``z`` ([N, d]), averaged over the rows."""
    _check_rows(z, "activation_sparsity")
    acc = ProxyAccumulator()
    acc.update(z)
    return acc.activation_sparsity()


class ProxyAccumulator:
    """Streams FD and sparsity over batches of rows of one layer; the result equals the one-shot value.

    State (all float64, additive across batches and processes, see :meth:`state` / :meth:`merge`): the sum of unit
    rows ``s`` [d], the sum of their squared norms (the number of non-zero rows), the number of rows, the sum of the
    per-row variances, and the sum of ``|z|`` per hidden dimension (for ranking predominant dimensions).
    """

    def __init__(self):
        self.unit_sum: torch.Tensor | None = None
        self.abs_sum: torch.Tensor | None = None
        self._scalars: torch.Tensor | None = None  # [sum of squared unit-row norms, sum of row variances]
        self.count = 0

    @property
    def unit_sq(self) -> float:
        return 0.0 if self._scalars is None else float(self._scalars[0])

    @property
    def variance_sum(self) -> float:
        return 0.0 if self._scalars is None else float(self._scalars[1])

    def update(self, z: torch.Tensor) -> None:
        """Add a batch of rows; stays on the rows' device with no host sync (the values are read at the end)."""
        _check_rows(z, "ProxyAccumulator.update")
        if z.shape[0] == 0:
            return
        if self.unit_sum is not None and z.shape[1] != self.unit_sum.shape[0]:
            raise ValueError(f"rows of width {z.shape[1]} do not match earlier rows of width {self.unit_sum.shape[0]}")
        z64 = z.detach().to(torch.float64)
        unit = _unit_rows(z64)
        if self.unit_sum is None:
            self.unit_sum = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
            self.abs_sum = torch.zeros_like(self.unit_sum)
            self._scalars = torch.zeros(2, dtype=torch.float64, device=z.device)
        self.unit_sum += unit.sum(0)
        self.abs_sum += z64.abs().sum(0)
        self._scalars += torch.stack([unit.pow(2).sum(), z64.var(dim=1, correction=0).sum()])
        self.count += z.shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        """The additive state as tensors (sum them across processes, then :meth:`from_state`)."""
        if self.unit_sum is None:
            raise ValueError("the accumulator has seen no rows")
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.unit_sum.device)
        scalars = torch.cat([self._scalars[:1], count, self._scalars[1:]])  # [unit_sq, count, variance_sum]
        return {"unit_sum": self.unit_sum, "abs_sum": self.abs_sum, "scalars": scalars}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ProxyAccumulator:
        acc = cls()
        acc.unit_sum = state["unit_sum"].to(torch.float64)
        acc.abs_sum = state["abs_sum"].to(torch.float64)
        scalars = state["scalars"].to(torch.float64)
        acc._scalars = torch.stack([scalars[0], scalars[2]])
        acc.count = int(round(float(scalars[1])))
        return acc

    def merge(self, other: ProxyAccumulator) -> ProxyAccumulator:
        """Add another accumulator's rows (e.g. another shard of the probes) to this one."""
        if other.unit_sum is None:
            return self
        if self.unit_sum is None:
            self.unit_sum, self.abs_sum = other.unit_sum.clone(), other.abs_sum.clone()
            self._scalars = other._scalars.clone()
        else:
            self.unit_sum = self.unit_sum + other.unit_sum.to(self.unit_sum.device)
            self.abs_sum = self.abs_sum + other.abs_sum.to(self.abs_sum.device)
            self._scalars = self._scalars + other._scalars.to(self._scalars.device)
        self.count += other.count
        return self

    def mean_pairwise_cosine(self) -> float:
        if self.count < 2:
            raise ValueError(f"feature decorrelation needs at least 2 prompts, got {self.count}")
        off_diagonal = float(self.unit_sum.pow(2).sum()) - self.unit_sq
        return off_diagonal / (self.count * (self.count - 1))

    def feature_decorrelation(self) -> float:
        return 1.0 - self.mean_pairwise_cosine()

    def activation_sparsity(self) -> float:
        if self.count < 1:
            raise ValueError("activation sparsity needs at least 1 prompt")
        return self.variance_sum / self.count

    def mean_abs_activation(self) -> torch.Tensor:
        """Mean ``|z_j|`` per hidden dimension ([d]), the ranking of predominant dimensions."""
        if self.count < 1:
            raise ValueError("the accumulator has seen no rows")
        return self.abs_sum / self.count


# ----------------------------------------------------------------------------------------------------------------------
# Weight proxy (Gurnee et al. 2023), for MLPs whose input projection has a bias
# ----------------------------------------------------------------------------------------------------------------------


def neuron_weight_scores(w_in: torch.Tensor, b_in: torch.Tensor) -> torch.Tensor:
    """``||w_in_j|| * b_in_j`` per neuron ``j``; ``w_in`` is [neurons, d_model] (one input weight vector per row)."""
    if w_in.dim() != 2 or b_in.dim() != 1 or w_in.shape[0] != b_in.shape[0]:
        raise ValueError(
            f"neuron_weight_scores needs w_in [neurons, d_model] and b_in [neurons], got {tuple(w_in.shape)} and "
            f"{tuple(b_in.shape)}"
        )
    return w_in.detach().to(torch.float64).norm(dim=1) * b_in.detach().to(torch.float64)


def median(values: torch.Tensor) -> float:
    """The usual median (mean of the two middle values for an even count; ``torch.median`` takes the lower one)."""
    return float(torch.quantile(values.detach().to(torch.float64).flatten(), 0.5))


def weight_proxy_values(scores: list[torch.Tensor]) -> list[float]:
    """Per layer ``median_j(score_j) / max_layers median_j(|score_j|)`` (docs/method.md), ``scores`` holding every
    layer of the model (the scale is over all of them, so values from different layer selections compare)."""
    scale = max(median(s.abs()) for s in scores)
    if scale == 0:
        raise ValueError("every layer's median |weight score| is 0; the weight proxy is undefined")
    return [median(s) / scale for s in scores]


def weight_proxy_change(
    base_w: torch.Tensor, base_b: torch.Tensor, tuned_w: torch.Tensor, tuned_b: torch.Tensor, top_k: int = 100
) -> float:
    """``(tuned - base) / |base|`` of ``median_j(||w_in_j|| * b_in_j)`` over the ``top_k`` neurons whose input weight
    vectors changed most (by ``||w_tuned_j - w_base_j||``)."""
    if base_w.shape != tuned_w.shape or base_b.shape != tuned_b.shape:
        raise ValueError(
            f"base and tuned input weights differ in shape: {tuple(base_w.shape)} vs {tuple(tuned_w.shape)}"
        )
    check_int("top_k", top_k)
    delta = (tuned_w.detach().to(torch.float64) - base_w.detach().to(torch.float64)).norm(dim=1)
    picked = delta.topk(min(top_k, delta.numel())).indices
    base = median(neuron_weight_scores(base_w, base_b)[picked])
    tuned = median(neuron_weight_scores(tuned_w, tuned_b)[picked])
    if base == 0:
        raise ValueError("the base model's median weight score on the changed neurons is 0; relative change undefined")
    return (tuned - base) / abs(base)
