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
from .monosemanticity import (
    MonosemanticityCallback,
    MonosemanticityReport,
    NeuronTokens,
    ProxyAccumulator,
    WeightProxyReport,
    activation_sparsity,
    feature_decorrelation,
    load_prompts,
    measure_monosemanticity,
    top_tokens,
    weight_proxy,
)
from .penalty import decorrelation_penalty
from .trainer import PAPER_RECIPE, DecPOConfig, DecPOTrainer


__all__ = [
    "PAPER_RECIPE",
    "ActivationCapture",
    "DecPOConfig",
    "DecPOTrainer",
    "MonosemanticityCallback",
    "MonosemanticityReport",
    "NeuronTokens",
    "ProxyAccumulator",
    "Site",
    "WeightProxyReport",
    "activation_sparsity",
    "build_row_index",
    "count_decpo_hooks",
    "decorrelation_penalty",
    "feature_decorrelation",
    "load_prompts",
    "measure_monosemanticity",
    "resolve_sites",
    "top_tokens",
    "weight_proxy",
]
