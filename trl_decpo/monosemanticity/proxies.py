# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Monosemanticity proxies as pure tensor math (docs/method.md): no model, no hooks, no Trainer.

* :func:`feature_decorrelation`: ``FD = 1 - mean_{i != j} cos(z_i, z_j)`` over the rows of ``z`` (one row per prompt),
  exact in O(N d) from the sum of the unit rows; :class:`ProxyAccumulator` streams it (and the sparsity) batch by batch.
* :func:`decorrelation_control`: ``1 - mean_{i != j} cos^2(z_i - m, z_j - m)`` (``m`` the mean row), FD's
  anisotropy-free control, and :func:`participation_ratio` ``(tr C)^2 / ||C||_F^2`` of the rows' covariance ``C``. Both
  need the rows themselves (O(N d) memory, N rows of width d): :class:`ProxyAccumulator` keeps them with
  ``keep_rows=True``.
* :func:`weighted_feature_decorrelation` / :func:`weighted_control`: FD and the control from the ``[N, N]`` Gram of the
  rows under bootstrap weights (``statistic(gram, weights)`` for :func:`trl_decpo.evaluation.stats.paired_bootstrap`).
* :func:`activation_sparsity`: the variance across the hidden dimensions of each row, averaged over rows.
* :func:`neuron_weight_scores` / :func:`weight_proxy_values`: the Gurnee et al. weight proxy for MLPs with an input bias.

Conventions. The variance is the population variance (divide by ``d``). A zero row has no direction: its cosine with
anything is 0 (as ``torch.nn.functional.cosine_similarity`` gives), it still counts as a prompt in ``N``; the same holds
for a row equal to the mean row in the control. Everything is accumulated in float64, whatever the activation dtype.
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


# A centred row is "zero" (no direction, cosine 0 with every row) when its squared norm is at most this fraction of the
# largest squared row norm: float64 rounding of the centring leaves about 1e-16 of it where rows equal their mean.
CENTRED_ZERO = 1e-12


def _centred(z: torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centred rows ``c_i = z_i - mean_j z_j`` (float64), their squared norms, and which of them have a direction."""
    z64 = z.detach().to(device=device or z.device, dtype=torch.float64)
    scale = z64.pow(2).sum(1).max()
    c = z64 - z64.mean(0)
    sq = c.pow(2).sum(1)
    return c, sq, sq > CENTRED_ZERO * scale


def _frobenius_sq_of_gram(x: torch.Tensor) -> torch.Tensor:
    """``||x x^T||_F^2`` (= ``||x^T x||_F^2``), from the smaller of the two Gram matrices."""
    small = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return small.pow(2).sum()


def decorrelation_control(z: torch.Tensor, device=None) -> float:
    """FD's anisotropy-free control: ``1 - mean_{i != j} cos^2(z_i - m, z_j - m)``, ``m`` the mean row of ``z``.

    Higher = more decorrelated, like FD. FD depends on the mean unit row only, so it also rises when one direction
    shared by all rows shrinks; centring removes that shared direction, and squaring the cosines (the quantity the
    DecPO penalty sums) keeps the centred rows' correlations from cancelling (the centred rows sum to zero, so their
    plain cosines average ``-1 / (N - 1)`` whatever the features do). Exact, in float64, from the smaller of the
    ``N x N`` and ``d x d`` Gram matrices of the normalised centred rows; it needs all the rows (O(N d) memory).
    A centred row that is zero has cosine 0 with every row and still counts in ``N``. ``device``: where to compute
    (default: the rows' device).
    """
    _check_rows(z, "decorrelation_control")
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"the decorrelation control needs at least 2 prompts, got {n}")
    c, sq, live = _centred(z, device)
    unit = torch.where(live.unsqueeze(1), c / sq.clamp_min(torch.finfo(c.dtype).tiny).sqrt().unsqueeze(1), 0.0)
    off_diagonal = _frobenius_sq_of_gram(unit) - live.sum()  # the diagonal holds cos^2 = 1 per row with a direction
    return 1.0 - float(off_diagonal) / (n * (n - 1))


def participation_ratio(z: torch.Tensor, device=None) -> float:
    """``(tr C)^2 / ||C||_F^2`` of the covariance ``C`` of the rows of ``z`` ([N, d]): the effective number of
    dimensions the rows spread over (1 for rows on one line, ``min(N - 1, d)`` at most). Exact, in float64; NaN when
    all rows are equal. Not scale-free per row: rows with larger deviations from the mean weigh more."""
    _check_rows(z, "participation_ratio")
    c, sq, _ = _centred(z, device)
    return float(sq.sum().pow(2) / _frobenius_sq_of_gram(c)) if bool(sq.sum() > 0) else float("nan")


# ----------------------------------------------------------------------------------------------------------------------
# Weighted statistics on the Gram matrix of the rows, for the paired bootstrap (trl_decpo.evaluation.stats)
# ----------------------------------------------------------------------------------------------------------------------


def _check_gram(gram: torch.Tensor, weights: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    gram = torch.as_tensor(gram).to(torch.float64)
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 2:
        raise ValueError(
            f"{what}: `gram` must be the [N, N] Gram matrix z z^T of N >= 2 rows, got {tuple(gram.shape)}"
        )
    weights = torch.as_tensor(weights).to(device=gram.device, dtype=torch.float64)
    if weights.dim() == 1:
        weights = weights.unsqueeze(0)
    if weights.dim() != 2 or weights.shape[1] != gram.shape[0]:
        raise ValueError(
            f"{what}: `weights` must be [R, N] with N = {gram.shape[0]} (the Gram's size), got {tuple(weights.shape)}"
        )
    if bool((weights < 0).any()):
        raise ValueError(f"{what}: `weights` must be non-negative draw counts")
    return gram, weights


def _distinct_pair_weight(weights: torch.Tensor) -> torch.Tensor:
    """``sum_{i != j} w_i w_j`` per resample: pairs of distinct units only (a unit is never paired with a copy of
    itself). Zero (so the statistic NaN) when a resample drew one unit only."""
    return weights.sum(1).pow(2) - weights.pow(2).sum(1)


def weighted_feature_decorrelation(gram: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """FD per resample: ``1 - sum_{i != j} w_i w_j cos(z_i, z_j) / sum_{i != j} w_i w_j``.

    ``gram``: the float64 ``[N, N]`` Gram ``z z^T`` of the rows (:meth:`ProxyAccumulator.gram`); ``weights``: ``[R, N]``
    draw counts (all ones: :func:`feature_decorrelation` of the rows). Returns ``[R]``. A statistic for
    :func:`trl_decpo.evaluation.stats.paired_bootstrap`.
    """
    gram, weights = _check_gram(gram, weights, "weighted_feature_decorrelation")
    diag = gram.diagonal()
    live = diag > _EPS**2  # a zero row: cosine 0 with every row (the convention of feature_decorrelation)
    inv = torch.where(live, diag.clamp_min(torch.finfo(gram.dtype).tiny).rsqrt(), 0.0)
    cos = gram * inv.unsqueeze(1) * inv.unsqueeze(0)
    cos.fill_diagonal_(0.0)
    return 1.0 - ((weights @ cos) * weights).sum(1) / _distinct_pair_weight(weights)


def weighted_control(gram: torch.Tensor, weights: torch.Tensor, chunk_elements: int = 1 << 24) -> torch.Tensor:
    """The control per resample: ``1 - sum_{i != j} w_i w_j cos^2(z_i - m_w, z_j - m_w) / sum_{i != j} w_i w_j``, with
    ``m_w`` the weighted mean row, all from the float64 Gram ``z z^T`` (``[N, N]``) and ``[R, N]`` draw counts.

    All ones gives :func:`decorrelation_control`. Resamples are processed a few at a time so that no intermediate
    holds more than ``chunk_elements`` numbers (each resample centres the Gram anew: ``R x N x N`` in all). Returns
    ``[R]``. A statistic for :func:`trl_decpo.evaluation.stats.paired_bootstrap`.
    """
    gram, weights = _check_gram(gram, weights, "weighted_control")
    n = gram.shape[0]
    threshold = CENTRED_ZERO * gram.diagonal().max()
    out = []
    for w in weights.split(max(1, chunk_elements // (n * n))):
        total = w.sum(1, keepdim=True)
        a = (w @ gram) / total  # <z_i, m_w>
        b = (a * w).sum(1, keepdim=True) / total  # <m_w, m_w>
        centred = gram - a.unsqueeze(2) - a.unsqueeze(1) + b.unsqueeze(2)  # <z_i - m_w, z_j - m_w>
        diag = centred.diagonal(dim1=1, dim2=2)
        inv = torch.where(diag > threshold, 1.0 / diag.clamp_min(torch.finfo(gram.dtype).tiny), 0.0)
        cos2 = centred.pow_(2).mul_(inv.unsqueeze(2)).mul_(inv.unsqueeze(1))
        cos2.diagonal(dim1=1, dim2=2).zero_()
        off_diagonal = torch.einsum("ri,rij,rj->r", w, cos2, w)
        out.append(1.0 - off_diagonal / _distinct_pair_weight(w))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------------------------
# Streaming accumulator
# ----------------------------------------------------------------------------------------------------------------------


class ProxyAccumulator:
    """Streams FD and sparsity over batches of rows of one layer; the result equals the one-shot value.

    State (all float64, additive across batches and processes, see :meth:`state` / :meth:`merge`): the sum of unit
    rows ``s`` [d], the sum of their squared norms (the number of non-zero rows), the number of rows, the sum of the
    per-row variances, and the sum of ``|z|`` per hidden dimension (for ranking predominant dimensions).

    With ``keep_rows=True`` it also keeps the rows themselves, on the CPU (float32, or float64 for float64 rows: N x d x
    4 bytes), each with its prompt index, for what needs them: :meth:`rows` (in prompt order), :meth:`gram`,
    :meth:`control`, :meth:`participation_ratio`, :meth:`row_sparsity`. The rows are not additive state: across
    processes they are gathered (``trl_decpo.monosemanticity.measure`` does it), not summed.
    """

    def __init__(self, keep_rows: bool = False):
        self.keep_rows = keep_rows
        self.unit_sum: torch.Tensor | None = None
        self.abs_sum: torch.Tensor | None = None
        self._scalars: torch.Tensor | None = None  # [sum of squared unit-row norms, sum of row variances]
        self.count = 0
        self._row_parts: list[torch.Tensor] = []
        self._index_parts: list[torch.Tensor] = []

    @property
    def unit_sq(self) -> float:
        return 0.0 if self._scalars is None else float(self._scalars[0])

    @property
    def variance_sum(self) -> float:
        return 0.0 if self._scalars is None else float(self._scalars[1])

    def update(self, z: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Add a batch of rows; stays on the rows' device with no host sync (the values are read at the end), except
        for the copy of the rows to the CPU with ``keep_rows``. ``index``: each row's prompt index (default: the order
        of arrival)."""
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
        if self.keep_rows:
            if index is None:
                index = torch.arange(self.count, self.count + z.shape[0])
            index = torch.as_tensor(index).detach().to("cpu", torch.long).reshape(-1)
            if index.numel() != z.shape[0]:
                raise ValueError(f"`index` has {index.numel()} entries for {z.shape[0]} rows")
            dtype = torch.float64 if z.dtype == torch.float64 else torch.float32  # exact for half and bfloat16
            self._row_parts.append(z.detach().to("cpu", dtype))
            self._index_parts.append(index)
        self.count += z.shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        """The additive state as tensors (sum them across processes, then :meth:`from_state`)."""
        if self.unit_sum is None:
            raise ValueError("the accumulator has seen no rows")
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.unit_sum.device)
        scalars = torch.cat([self._scalars[:1], count, self._scalars[1:]])  # [unit_sq, count, variance_sum]
        return {"unit_sum": self.unit_sum, "abs_sum": self.abs_sum, "scalars": scalars}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> ProxyAccumulator:
        """An accumulator from a (summed) :meth:`state`; ``rows``: all of its rows in prompt order, if kept."""
        acc = cls(keep_rows=rows is not None)
        acc.unit_sum = state["unit_sum"].to(torch.float64)
        acc.abs_sum = state["abs_sum"].to(torch.float64)
        scalars = state["scalars"].to(torch.float64)
        acc._scalars = torch.stack([scalars[0], scalars[2]])
        acc.count = int(round(float(scalars[1])))
        if rows is not None:
            _check_rows(rows, "ProxyAccumulator.from_state")
            if rows.shape[0] != acc.count:
                raise ValueError(f"`rows` holds {rows.shape[0]} rows but the state counts {acc.count}")
            acc._row_parts, acc._index_parts = [rows.detach().cpu()], [torch.arange(acc.count)]
        return acc

    def merge(self, other: ProxyAccumulator) -> ProxyAccumulator:
        """Add another accumulator's rows (e.g. another shard of the probes) to this one. Kept rows are merged when
        both keep them (their prompt indices must not overlap); an empty accumulator takes the other's setting."""
        if other.unit_sum is None:
            return self
        if self.unit_sum is None:
            self.unit_sum, self.abs_sum = other.unit_sum.clone(), other.abs_sum.clone()
            self._scalars = other._scalars.clone()
            self.keep_rows = other.keep_rows
        else:
            if self.keep_rows and not other.keep_rows:
                raise ValueError("cannot merge an accumulator without rows into one that keeps them (keep_rows=True)")
            self.unit_sum = self.unit_sum + other.unit_sum.to(self.unit_sum.device)
            self.abs_sum = self.abs_sum + other.abs_sum.to(self.abs_sum.device)
            self._scalars = self._scalars + other._scalars.to(self._scalars.device)
        if self.keep_rows:
            self._row_parts += other._row_parts
            self._index_parts += other._index_parts
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

    # -- what needs the rows (keep_rows=True) --------------------------------------------------------------------------

    def rows_and_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept rows ``[N, d]`` (CPU, float32) sorted by prompt index, and those indices ``[N]``."""
        if not self.keep_rows:
            raise ValueError(
                "this accumulator does not keep its rows: create it with ProxyAccumulator(keep_rows=True)"
            )
        if not self._row_parts:
            raise ValueError("the accumulator has seen no rows")
        index = torch.cat(self._index_parts)
        order = index.argsort(stable=True)
        index = index[order]
        if bool((index[1:] == index[:-1]).any()):
            raise ValueError("two kept rows have the same prompt index")
        return torch.cat(self._row_parts)[order], index

    def rows(self) -> torch.Tensor:
        """The kept rows ``[N, d]`` in prompt order (CPU; float32, or float64 for float64 activations)."""
        return self.rows_and_index()[0]

    def gram(self, device=None) -> torch.Tensor:
        """The float64 ``[N, N]`` Gram ``z z^T`` of the rows in prompt order: the input of
        :func:`weighted_feature_decorrelation` and :func:`weighted_control`."""
        rows = self.rows().to(device=device, dtype=torch.float64)
        return rows @ rows.T

    def control(self, device=None) -> float:
        """:func:`decorrelation_control` of the kept rows."""
        return decorrelation_control(self.rows(), device)

    def participation_ratio(self, device=None) -> float:
        """:func:`participation_ratio` of the kept rows."""
        return participation_ratio(self.rows(), device)

    def row_sparsity(self) -> torch.Tensor:
        """Each row's variance across hidden dimensions, float64 ``[N]`` in prompt order; their mean is
        :meth:`activation_sparsity` (bootstrap it with ``trl_decpo.evaluation.stats.weighted_mean``)."""
        return self.rows().to(torch.float64).var(dim=1, correction=0)


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
