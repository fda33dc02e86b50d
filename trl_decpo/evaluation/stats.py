# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Paired bootstrap intervals for "arm B minus arm A" over shared units (held-out pairs, probe prompts).

Pure math on tensors, no model. A statistic is a function ``statistic(data, weights) -> Tensor[R]`` where ``weights``
``[R, N]`` holds, for each of ``R`` resamples, how many times each of the ``N`` units was drawn (a multinomial draw of
``N`` out of ``N``; the all-ones row is the observed sample). Writing statistics this way lets one resample serve both
arms (the pairing) and lets pairwise statistics such as feature decorrelation weight each pair of *distinct* units by
``w_i * w_j`` instead of pairing a unit with its own duplicate.

    from trl_decpo.evaluation.stats import paired_bootstrap, weighted_mean
    result = paired_bootstrap(weighted_mean, dpo_margins, decpo_margins)
    result.verdict()  # "higher", "lower" or "no detectable difference"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


Statistic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NO_DIFFERENCE = "no detectable difference"


def interval_verdict(low: float, high: float, higher: str = "higher", lower: str = "lower") -> str:
    """``higher`` / ``lower`` when the interval ``[low, high]`` excludes 0, otherwise "no detectable difference"."""
    if low > 0:
        return higher
    if high < 0:
        return lower
    return NO_DIFFERENCE


def bootstrap_weights(num_units: int, num_resamples: int, seed: int = 0) -> torch.Tensor:
    """``[num_resamples, num_units]`` float64 draw counts; every row sums to ``num_units``."""
    if num_units < 1:
        raise ValueError(f"the bootstrap needs at least 1 unit, got {num_units}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive integer, got {num_resamples}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(num_units, (num_resamples, num_units), generator=generator)
    weights = torch.zeros(num_resamples, num_units, dtype=torch.float64)
    weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return weights


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of per-unit ``values`` ``[N]`` under each row of ``weights`` ``[R, N]``."""
    values = torch.as_tensor(values, dtype=torch.float64)
    return weights @ values / weights.sum(1)


@dataclass
class Comparison:
    """``b - a`` on the observed units and its bootstrap percentile interval."""

    a: float
    b: float
    difference: float
    low: float
    high: float
    confidence: float
    num_units: int
    num_resamples: int

    def verdict(self, higher: str = "higher", lower: str = "lower") -> str:
        """``higher`` / ``lower`` when the interval excludes 0, otherwise "no detectable difference"."""
        return interval_verdict(self.low, self.high, higher, lower)

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict()}


def paired_bootstrap(
    statistic: Statistic,
    a,
    b,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Percentile interval of ``statistic(b) - statistic(a)`` with the same resampled units for both arms.

    ``a`` and ``b`` are the per-unit data of the two arms, aligned on the same units along their first dimension
    (values ``[N]`` for means, an ``[N, N]`` Gram matrix for pairwise statistics). Resamples on which the statistic
    is undefined (a pairwise statistic on a single drawn unit) are left out; more than 20% undefined is an error.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired arms need the same units: {a.shape[0]} vs {b.shape[0]}")
    n = a.shape[0]
    observed = torch.ones(1, n, dtype=torch.float64)
    value_a, value_b = float(statistic(a, observed)[0]), float(statistic(b, observed)[0])
    weights = bootstrap_weights(n, num_resamples, seed)
    differences = statistic(b, weights) - statistic(a, weights)
    # A pairwise statistic is undefined (NaN) on a resample that drew one unit only (likely with very few units): such
    # resamples carry no information on it and are left out; `num_resamples` counts those kept.
    kept = differences[differences.isfinite()]
    if kept.numel() < 0.8 * num_resamples:
        raise ValueError(
            f"the statistic is undefined on {num_resamples - kept.numel()} of {num_resamples} bootstrap resamples of "
            f"{n} units (arms a={value_a}, b={value_b}): too few units for an interval"
        )
    tail = (1 - confidence) / 2
    low, high = torch.quantile(kept, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Comparison(value_a, value_b, value_b - value_a, low, high, confidence, n, kept.numel())
