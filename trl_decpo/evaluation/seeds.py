# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Training seeds as the unit of a comparison (docs/analysis_plan.md): the paired difference of two arms per seed, its
t interval and test, a non-inferiority bound against a declared margin, Holm's step-down correction, and a two-level
bootstrap over seeds and, within each seed, its units.

Pure math on numbers and tensors. Unlike :func:`~trl_decpo.evaluation.stats.paired_bootstrap`, which resamples the
units of fixed trained models, these intervals include the spread between training runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from .stats import bootstrap_weights, interval_verdict, weighted_mean


@dataclass
class SeedComparison:
    """``mean(b_s - a_s)`` over seeds, its two-sided t interval and the one-sample t test of a zero mean."""

    mean: float
    low: float
    high: float
    sd: float
    num_seeds: int
    p_value: float
    confidence: float

    def verdict(self, higher: str = "higher", lower: str = "lower") -> str:
        return interval_verdict(self.low, self.high, higher, lower)

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict()}


def _differences(a: Sequence[float], b: Sequence[float]) -> torch.Tensor:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.dim() != 1 or a.shape != b.shape:
        raise ValueError(
            f"paired seeds need two 1-D sequences of the same length, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if len(a) < 2:
        raise ValueError(f"a seed-level interval needs at least 2 seeds, got {len(a)}")
    if not torch.isfinite(a).all() or not torch.isfinite(b).all():
        raise ValueError("the per-seed values hold non-finite numbers")
    return b - a


def seed_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> SeedComparison:
    """The mean of the paired differences ``b_s - a_s`` over seeds, its two-sided ``confidence`` t interval
    (``n - 1`` degrees of freedom) and the two-sided p-value of the one-sample t test of a zero mean."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")
    d = _differences(a, b)
    n, mean, sd = len(d), d.mean().item(), d.std(unbiased=True).item()
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    if sd == 0:
        p_value = 1.0 if mean == 0 else 0.0
    else:
        p_value = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return SeedComparison(mean, mean - half, mean + half, sd, n, p_value, confidence)


def non_inferiority(
    a: Sequence[float], b: Sequence[float], margin: float, higher_is_better: bool = True, alpha: float = 0.05
) -> dict:
    """Whether arm ``b`` is non-inferior to arm ``a`` by ``margin`` (> 0): the one-sided ``1 - alpha`` t bound of
    ``mean(b_s - a_s)`` lies above ``-margin`` (below ``+margin`` when lower is better). Returns the bound, the margin
    and the verdict ("non-inferior" or "not shown non-inferior")."""
    if not margin > 0:
        raise ValueError(f"`margin` must be > 0, got {margin}")
    one_sided = seed_interval(a, b, confidence=1 - 2 * alpha)  # its low (high) end is the one-sided bound
    bound = one_sided.low if higher_is_better else one_sided.high
    holds = bound > -margin if higher_is_better else bound < margin
    return {
        "mean": one_sided.mean,
        "bound": bound,
        "margin": margin,
        "higher_is_better": higher_is_better,
        "verdict": "non-inferior" if holds else "not shown non-inferior",
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (each compared with the family-wise level)."""
    p = [float(v) for v in p_values]
    if any(not 0 <= v <= 1 for v in p):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def two_level_bootstrap(
    a_units: Sequence,
    b_units: Sequence,
    statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = weighted_mean,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile interval of the mean over seeds of ``statistic(b_s) - statistic(a_s)``, resampling the seeds with
    replacement and the units with replacement, both in every resample.

    The units (held-out pairs, prompts, probes) are the same for every seed, so seeds and units are crossed: each
    resample draws the units once and applies that draw to every seed and both arms (drawing them apart for each seed
    would average their sampling error away over the seeds). ``a_units[s]`` / ``b_units[s]``: seed ``s``'s per-unit
    data of each arm, aligned on the same units (``[N]`` values for means); ``statistic(data, weights [R, N]) -> [R]``
    as in :func:`~trl_decpo.evaluation.stats.paired_bootstrap`. Also the ``low_one_sided`` / ``high_one_sided``
    percentiles at ``1 - confidence`` and ``confidence``, for a one-sided bound against a margin.
    """
    if len(a_units) != len(b_units) or len(a_units) < 2:
        raise ValueError(f"two arms of the same seeds, at least 2, are needed; got {len(a_units)} and {len(b_units)}")
    data = [
        (torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))
        for a, b in zip(a_units, b_units, strict=True)
    ]
    sizes = {len(x) for pair in data for x in pair}
    if len(sizes) != 1:
        raise ValueError(
            f"every seed and arm must hold the same units (crossed design), got unit counts {sorted(sizes)}"
        )
    weights = bootstrap_weights(sizes.pop(), num_resamples, seed + 1)  # one draw of units per resample, for all seeds
    per_seed = torch.stack([statistic(b, weights) - statistic(a, weights) for a, b in data], dim=1)  # [R, S]
    ones = torch.ones(1, weights.shape[1], dtype=torch.float64)
    observed = [(statistic(b, ones) - statistic(a, ones)).item() for a, b in data]
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(len(data), (num_resamples, len(data)), generator=generator)
    means = per_seed.gather(1, drawn).mean(1)
    return _percentiles(means, sum(observed) / len(observed), len(data), confidence)


def seed_bootstrap(
    a: Sequence[float], b: Sequence[float], num_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Percentile interval of ``mean(b_s - a_s)`` resampling the seeds alone (for a statistic whose within-seed
    resampling is not done here, e.g. FD over a fixed probe set)."""
    d = _differences(a, b)
    generator = torch.Generator().manual_seed(seed)
    means = d[torch.randint(len(d), (num_resamples, len(d)), generator=generator)].mean(1)
    return _percentiles(means, d.mean().item(), len(d), confidence)


def _percentiles(means: torch.Tensor, mean: float, num_seeds: int, confidence: float) -> dict:
    tail = (1 - confidence) / 2
    levels = torch.tensor([tail, 1 - tail, 1 - confidence, confidence], dtype=torch.float64)
    low, high, low_one_sided, high_one_sided = torch.quantile(means, levels).tolist()
    return {
        "mean": mean, "low": low, "high": high, "low_one_sided": low_one_sided, "high_one_sided": high_one_sided,
        "num_seeds": num_seeds, "verdict": interval_verdict(low, high),
    }  # fmt: skip
