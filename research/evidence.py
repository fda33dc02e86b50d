# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""DecPO minus DPO, measure by measure, with paired bootstrap intervals over the held-out units and seeds.

Every measure is a statistic of per-unit data (held-out pairs, prompts or probes) written as
``statistic(data, weights)`` (see `trl_decpo.evaluation.stats`), so one resample of the units serves both arms and
every seed: the interval of a pooled difference resamples the units once and averages the per-seed differences.
Feature decorrelation and its control are pairwise statistics of the probes' Gram matrix; the bootstrap weights each
pair of distinct probes by the product of their draw counts (`weighted_feature_decorrelation`, `weighted_control`).

    from research.evidence import MEASURES, compare
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trl_decpo import paired_bootstrap, weighted_control, weighted_feature_decorrelation, weighted_mean
from trl_decpo.evaluation import NO_DIFFERENCE


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str  # what the bootstrap resamples
    paper: str  # the direction the paper expects for DecPO against DPO: "higher" or "lower"
    data: object  # ArmResult, hooked layer -> per-unit tensor, units first (Gram: [N, N, ...])
    statistic: object  # (data [N, ..., S], weights [R, N]) -> [R], averaged over the trailing seed axis


def _seed_mean(per_seed):
    def statistic(data, weights):
        return torch.stack([per_seed(data[..., s], weights) for s in range(data.shape[-1])]).mean(0)

    return statistic


def _layer_mean(pairwise):
    def statistic(data, weights):
        return torch.stack([pairwise(data[:, :, layer], weights) for layer in range(data.shape[2])]).mean(0)

    return statistic


def _grams(result, layer=None):
    report = result.report
    if layer is not None:
        return report.gram(layer)
    return torch.stack([report.gram(i) for i in report.layers], dim=2)


def _sparsity(result, layer=None):
    report = result.report
    if layer is not None:
        return report.row_sparsity(layer)
    return torch.stack([report.row_sparsity(i) for i in report.layers], dim=1).mean(1)


MEASURES = [
    Measure(
        "reward_accuracy",
        "held-out reward accuracy",
        "pairs",
        "higher",
        lambda r, h: r.rewards.correct.double(),
        _seed_mean(weighted_mean),
    ),
    Measure(
        "reward_margin",
        "held-out reward margin",
        "pairs",
        "higher",
        lambda r, h: r.rewards.margins.double(),
        _seed_mean(weighted_mean),
    ),
    Measure(
        "offensiveness",
        "offensiveness of greedy replies (task score)",
        "prompts",
        "lower",
        lambda r, h: torch.tensor(r.scores, dtype=torch.float64),
        _seed_mean(weighted_mean),
    ),
    Measure(
        "fd_hooked",
        "FD, hooked layer",
        "probes",
        "higher",
        lambda r, h: _grams(r, h),
        _seed_mean(weighted_feature_decorrelation),
    ),
    Measure(
        "control_hooked",
        "control (1 - centred cos^2), hooked layer",
        "probes",
        "higher",
        lambda r, h: _grams(r, h),
        _seed_mean(weighted_control),
    ),
    Measure(
        "fd_mean",
        "FD, mean over layers",
        "probes",
        "higher",
        lambda r, h: _grams(r),
        _seed_mean(_layer_mean(weighted_feature_decorrelation)),
    ),
    Measure(
        "control_mean",
        "control, mean over layers",
        "probes",
        "higher",
        lambda r, h: _grams(r),
        _seed_mean(_layer_mean(weighted_control)),
    ),
    Measure(
        "probe_k1_hooked",
        "k = 1 probe accuracy (toxic vs benign statements), hooked layer",
        "held-out statements",
        "higher",
        lambda r, h: torch.tensor(r.probing[h].correct[1], dtype=torch.float64),
        _seed_mean(weighted_mean),
    ),
    Measure(
        "sparsity_hooked",
        "activation sparsity, hooked layer",
        "probes",
        "higher",
        lambda r, h: _sparsity(r, h),
        _seed_mean(weighted_mean),
    ),
    Measure(
        "sparsity_mean",
        "activation sparsity, mean over layers",
        "probes",
        "higher",
        lambda r, h: _sparsity(r),
        _seed_mean(weighted_mean),
    ),
]


def _stack(results, measure, hooked):
    return torch.stack([measure.data(r, hooked).double() for r in results], dim=-1)


def compare(a_results, b_results, hooked: int, num_resamples: int = 2000, seed: int = 0, measures=MEASURES):
    """Rows of ``b - a`` (lists of ArmResult, one per seed, same seeds in the same order): pooled over seeds and per
    seed, each with a 95% paired bootstrap interval, the verdict and whether it goes against the paper."""
    rows = []
    for measure in measures:
        a, b = _stack(a_results, measure, hooked), _stack(b_results, measure, hooked)
        pooled = paired_bootstrap(measure.statistic, a, b, num_resamples=num_resamples, seed=seed)
        per_seed = [
            paired_bootstrap(
                measure.statistic, a[..., s : s + 1], b[..., s : s + 1], num_resamples=num_resamples, seed=seed
            )
            for s in range(a.shape[-1])
        ]
        verdict = pooled.verdict()
        against = verdict not in (NO_DIFFERENCE, measure.paper)
        rows.append(
            {
                "key": measure.key,
                "label": measure.label,
                "unit": measure.unit,
                "paper": measure.paper,
                "a": pooled.a,
                "b": pooled.b,
                "difference": pooled.difference,
                "low": pooled.low,
                "high": pooled.high,
                "verdict": verdict,
                "against_paper": against,
                "leans_against_paper": (pooled.difference > 0) != (measure.paper == "higher")
                and pooled.difference != 0,
                "per_seed": [c.to_dict() for c in per_seed],
            }
        )
    return rows


def value(results, measure_key: str, hooked: int) -> float:
    """The seed mean of one measure for one arm (observed units)."""
    measure = next(m for m in MEASURES if m.key == measure_key)
    data = _stack(results, measure, hooked)
    return float(measure.statistic(data, torch.ones(1, data.shape[0], dtype=torch.float64))[0])


def interval(values, num_resamples: int = 2000, seed: int = 0):
    """Mean of per-unit values (e.g. one arm's held-out margins) and its bootstrap 95% interval (against 0)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    return paired_bootstrap(weighted_mean, torch.zeros_like(values), values, num_resamples=num_resamples, seed=seed)
