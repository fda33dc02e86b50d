# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of trained models against a base: preference rewards, generated completions and their task scores,
paired bootstrap statistics and the comparison table, all of it in one call (:func:`evaluate_models`), and the
monosemanticity proxies' paired differences (docs/evaluation.md); with training seeds as the unit, the seed-level t
interval, non-inferiority, Holm's correction and the two-level bootstrap (:mod:`.seeds`, docs/analysis_plan.md)."""

from .evaluate import EvaluationResult, ModelEvaluation, evaluate_model, evaluate_models
from .generation import generate_completions
from .monosemanticity import proxy_differences
from .preference import (
    PairLogps,
    PairRewards,
    batch_logps,
    collate_pairs,
    dpo_pair_rewards,
    length_shortcut,
    preference_batches,
    preference_logps,
    tokenize_pairs,
)
from .report import EvaluationTable, comparison_table
from .scoring import Scorer, load_scorer
from .seeds import SeedComparison, holm, non_inferiority, seed_bootstrap, seed_interval, two_level_bootstrap
from .stats import NO_DIFFERENCE, Comparison, bootstrap_weights, paired_bootstrap, weighted_mean


__all__ = [
    "NO_DIFFERENCE",
    "Comparison",
    "EvaluationResult",
    "EvaluationTable",
    "ModelEvaluation",
    "PairLogps",
    "PairRewards",
    "Scorer",
    "SeedComparison",
    "batch_logps",
    "bootstrap_weights",
    "collate_pairs",
    "comparison_table",
    "dpo_pair_rewards",
    "evaluate_model",
    "evaluate_models",
    "generate_completions",
    "holm",
    "length_shortcut",
    "load_scorer",
    "non_inferiority",
    "paired_bootstrap",
    "preference_batches",
    "preference_logps",
    "proxy_differences",
    "seed_bootstrap",
    "seed_interval",
    "tokenize_pairs",
    "two_level_bootstrap",
    "weighted_mean",
]
