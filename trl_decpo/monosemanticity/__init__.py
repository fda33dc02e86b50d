# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Measuring monosemanticity on any causal LM: the proxies as pure math (:mod:`.proxies`), probe prompts
(:mod:`.probes`), the measurement itself (:mod:`.measure`), weight-based views (:mod:`.weights`, :mod:`.neurons`), the
training callback (:mod:`.callback`), figures (:mod:`.plotting`), a base model against tuned ones
(:mod:`.compare`), how models given as paths load (:mod:`.loading`), and every token's activations at a site, what an
SAE trains on (:mod:`.tokens`)."""

from .callback import MonosemanticityCallback
from .compare import MonosemanticityComparison, compare_monosemanticity
from .loading import load_model_and_adapter, load_tokenizer
from .measure import MonosemanticityReport, measure_monosemanticity
from .neurons import NeuronTokens, WeightProxyReport, top_tokens, weight_proxy
from .probes import PROBE_POOLING_CHOICES, ProbeSet, generation_suffix, load_prompts, prepare_probes, tokenize_prompts
from .proxies import (
    ProxyAccumulator,
    activation_sparsity,
    decorrelation_control,
    feature_decorrelation,
    participation_ratio,
    weighted_control,
    weighted_feature_decorrelation,
)
from .tables import Table
from .tokens import content_spans, token_activations


__all__ = [
    "PROBE_POOLING_CHOICES",
    "MonosemanticityCallback",
    "MonosemanticityReport",
    "NeuronTokens",
    "ProbeSet",
    "MonosemanticityComparison",
    "ProxyAccumulator",
    "Table",
    "WeightProxyReport",
    "activation_sparsity",
    "compare_monosemanticity",
    "content_spans",
    "decorrelation_control",
    "feature_decorrelation",
    "generation_suffix",
    "load_model_and_adapter",
    "load_prompts",
    "load_tokenizer",
    "measure_monosemanticity",
    "participation_ratio",
    "prepare_probes",
    "tokenize_prompts",
    "token_activations",
    "top_tokens",
    "weight_proxy",
    "weighted_control",
    "weighted_feature_decorrelation",
]
