# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""trl-decpo: DecPO (DPO + activation decorrelation, Yan et al. arXiv 2406.17969) for Hugging Face TRL.

The package reads from the bottom up (``docs/design.md``):

* :mod:`trl_decpo.penalty`: the penalty as pure tensor math;
* :mod:`trl_decpo.capture`: which module is hooked, which tokens make the rows, the hooks;
* :mod:`trl_decpo.trainer`: ``DecPOConfig`` and ``DecPOTrainer``, thin glue over the two above;
* :mod:`trl_decpo.monosemanticity`: the proxies, the measurement, the callback, the figures;
* :mod:`trl_decpo.cli`: the ``trl-decpo`` command.
"""

__version__ = "0.2.0"

from .capture import ActivationCapture, Site, build_row_index, count_decpo_hooks, resolve_sites
from .evaluation import (
    Comparison,
    EvaluationTable,
    PairLogps,
    PairRewards,
    Scorer,
    comparison_table,
    dpo_pair_rewards,
    generate_completions,
    load_scorer,
    paired_bootstrap,
    preference_logps,
)
from .monosemanticity import (
    POOLING_CHOICES,
    MonosemanticityCallback,
    MonosemanticityReport,
    NeuronTokens,
    ProbeSet,
    ProxyAccumulator,
    WeightProxyReport,
    activation_sparsity,
    decorrelation_control,
    feature_decorrelation,
    load_prompts,
    measure_monosemanticity,
    participation_ratio,
    top_tokens,
    weight_proxy,
)
from .penalty import decorrelation_penalty
from .trainer import PAPER_RECIPE, DecPOConfig, DecPOTrainer


__all__ = [
    "PAPER_RECIPE",
    "POOLING_CHOICES",
    "ActivationCapture",
    "Comparison",
    "DecPOConfig",
    "DecPOTrainer",
    "EvaluationTable",
    "MonosemanticityCallback",
    "MonosemanticityReport",
    "NeuronTokens",
    "PairLogps",
    "PairRewards",
    "ProbeSet",
    "ProxyAccumulator",
    "Scorer",
    "Site",
    "WeightProxyReport",
    "activation_sparsity",
    "build_row_index",
    "comparison_table",
    "count_decpo_hooks",
    "decorrelation_control",
    "decorrelation_penalty",
    "dpo_pair_rewards",
    "feature_decorrelation",
    "generate_completions",
    "load_prompts",
    "load_scorer",
    "measure_monosemanticity",
    "paired_bootstrap",
    "participation_ratio",
    "preference_logps",
    "resolve_sites",
    "top_tokens",
    "weight_proxy",
]
