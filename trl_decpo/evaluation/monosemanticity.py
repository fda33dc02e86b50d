# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Paired bootstrap intervals of the monosemanticity proxies between models measured on the same probes.

The units are the probes: one resample of them serves both models. FD and its control are pairwise statistics of the
probes' Gram matrix (each pair of distinct probes weighted by the product of their draw counts), sparsity a mean of
per-probe values.

    from trl_decpo.evaluation import proxy_differences
    from trl_decpo.monosemanticity import compare_monosemanticity

    comparison = compare_monosemanticity(base, {"dpo": dpo, "decpo": decpo}, probes, tokenizer)
    for row in proxy_differences(comparison):
        print(row["model"], "vs", row["against"], row["layer"], row["metric"], row["difference"], row["verdict"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..monosemanticity.compare import MonosemanticityComparison
from ..monosemanticity.measure import MonosemanticityReport
from ..monosemanticity.proxies import weighted_control, weighted_feature_decorrelation
from ..utils import check_choice
from .stats import paired_bootstrap, weighted_mean


# metric -> (bootstrap statistic, the report's per-probe data for a layer)
PROXY_STATISTICS = {
    "fd": (weighted_feature_decorrelation, "gram"),
    "control": (weighted_control, "gram"),
    "sparsity": (weighted_mean, "row_sparsity"),
}


def default_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """``(earlier, later)``: every model against the first (the base), and every later model against the second."""
    names = list(names)
    return [(names[0], name) for name in names[1:]] + [(names[1], name) for name in names[2:]]


def proxy_differences(
    comparison: MonosemanticityComparison | Mapping[str, MonosemanticityReport],
    pairs: Sequence[tuple[str, str]] | None = None,
    layers: Sequence[int] | None = None,
    metrics: Sequence[str] = tuple(PROXY_STATISTICS),
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """``later - earlier`` of each proxy, per pair of models and layer, with a paired bootstrap interval over the
    probes (:func:`paired_bootstrap`; one set of resamples for every row).

    ``comparison``: :func:`compare_monosemanticity`'s result, or a mapping of names to reports measured on the same
    probes with their rows kept. ``pairs``: ``(earlier, later)`` names (default: every model against the base, and
    every later model against the first after the base). Rows, in the order pair, layer, metric:
    ``{"model": later, "against": earlier, "layer", "metric", "a", "b", "difference", "low", "high", "confidence",
    "num_units", "num_resamples", "verdict"}``.
    """
    reports = comparison.reports if isinstance(comparison, MonosemanticityComparison) else dict(comparison)
    for metric in metrics:
        check_choice("metrics", metric, PROXY_STATISTICS)
    pairs = default_pairs(list(reports)) if pairs is None else list(pairs)
    rows = []
    for earlier, later in pairs:
        missing = [name for name in (earlier, later) if name not in reports]
        if missing:
            raise ValueError(f"`pairs` names {missing}, which are not among the models {list(reports)}")
        chosen = reports[earlier].layers if layers is None else list(layers)
        for layer in chosen:
            for metric in metrics:
                statistic, data = PROXY_STATISTICS[metric]
                a, b = (getattr(reports[name], data)(layer) for name in (earlier, later))
                result = paired_bootstrap(statistic, a, b, num_resamples, confidence, seed)
                rows.append({"model": later, "against": earlier, "layer": layer, "metric": metric, **result.to_dict()})
    return rows
