# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of trained models against a base: preference rewards and paired bootstrap statistics."""

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
from .stats import NO_DIFFERENCE, Comparison, bootstrap_weights, paired_bootstrap, weighted_mean


__all__ = [
    "NO_DIFFERENCE",
    "Comparison",
    "PairLogps",
    "PairRewards",
    "batch_logps",
    "bootstrap_weights",
    "collate_pairs",
    "dpo_pair_rewards",
    "length_shortcut",
    "paired_bootstrap",
    "preference_batches",
    "preference_logps",
    "tokenize_pairs",
    "weighted_mean",
]
