# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Measuring monosemanticity on any causal LM: the proxies as pure math (:mod:`.proxies`), probe prompts
(:mod:`.probes`), the measurement itself (:mod:`.measure`), weight-based views (:mod:`.weights`, :mod:`.neurons`), the
training callback (:mod:`.callback`) and figures (:mod:`.plotting`)."""

from .callback import MonosemanticityCallback
from .measure import MonosemanticityReport, measure_monosemanticity
from .neurons import NeuronTokens, WeightProxyReport, top_tokens, weight_proxy
from .probes import POOLING_CHOICES, ProbeSet, generation_suffix, load_prompts, prepare_probes, tokenize_prompts
from .proxies import (
    ProxyAccumulator,
    activation_sparsity,
    decorrelation_control,
    feature_decorrelation,
    participation_ratio,
    weighted_control,
    weighted_feature_decorrelation,
)


__all__ = [
    "POOLING_CHOICES",
    "MonosemanticityCallback",
    "MonosemanticityReport",
    "NeuronTokens",
    "ProbeSet",
    "ProxyAccumulator",
    "WeightProxyReport",
    "activation_sparsity",
    "decorrelation_control",
    "feature_decorrelation",
    "generation_suffix",
    "load_prompts",
    "measure_monosemanticity",
    "participation_ratio",
    "prepare_probes",
    "tokenize_prompts",
    "top_tokens",
    "weight_proxy",
    "weighted_control",
    "weighted_feature_decorrelation",
]
