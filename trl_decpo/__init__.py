# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""trl-decpo: DecPO (DPO + activation decorrelation, Yan et al. arXiv 2406.17969) for Hugging Face TRL."""

__version__ = "0.1.0"

from .callbacks import MonosemanticityCallback
from .capture import ActivationCapture, Site, build_row_index, count_decpo_hooks, resolve_sites
from .config import PAPER_RECIPE, DecPOConfig
from .decorrelation import decorrelation_penalty
from .measure import MonosemanticityReport, load_prompts, measure_monosemanticity
from .neurons import NeuronTokens, WeightProxyReport, top_tokens, weight_proxy
from .proxies import ProxyAccumulator, activation_sparsity, feature_decorrelation
from .trainer import DecPOTrainer


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
