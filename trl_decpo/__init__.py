# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""trl-decpo: DecPO (DPO + activation decorrelation, Yan et al. arXiv 2406.17969) for Hugging Face TRL.

The package reads from the bottom up (``docs/design.md``):

* :mod:`trl_decpo.penalty`: the penalty as pure tensor math;
* :mod:`trl_decpo.capture`: which module is hooked, which tokens make the rows, the hooks;
* :mod:`trl_decpo.trainer`: ``DecorrelationMixin`` (the penalty on any TRL trainer), ``DecPOConfig`` and
  ``DecPOTrainer``, thin glue over the two above;
* :mod:`trl_decpo.trainers`: the mixin on TRL's SFT, KTO, reward, GRPO and RLOO trainers;
* :mod:`trl_decpo.monosemanticity`: the proxies, the measurement, the callback, the figures;
* :mod:`trl_decpo.precision`: bf16 where the hardware runs it natively, float32 otherwise;
* :mod:`trl_decpo.cli`: the ``trl-decpo`` command.

The public names below are imported on first use (PEP 562), so that ``import trl_decpo`` and ``trl-decpo --help``
load neither torch nor TRL; ``from trl_decpo import DecPOTrainer`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


__version__ = "0.2.0"

# public name -> the subpackage that defines it
_EXPORTS = {
    "ActivationCapture": "capture",
    "Site": "capture",
    "build_row_index": "capture",
    "count_decpo_hooks": "capture",
    "resolve_sites": "capture",
    "Comparison": "evaluation",
    "EvaluationTable": "evaluation",
    "PairLogps": "evaluation",
    "PairRewards": "evaluation",
    "Scorer": "evaluation",
    "comparison_table": "evaluation",
    "dpo_pair_rewards": "evaluation",
    "generate_completions": "evaluation",
    "load_scorer": "evaluation",
    "paired_bootstrap": "evaluation",
    "preference_logps": "evaluation",
    "POOLING_CHOICES": "monosemanticity",
    "MonosemanticityCallback": "monosemanticity",
    "MonosemanticityReport": "monosemanticity",
    "NeuronTokens": "monosemanticity",
    "ProbeSet": "monosemanticity",
    "ProxyAccumulator": "monosemanticity",
    "WeightProxyReport": "monosemanticity",
    "activation_sparsity": "monosemanticity",
    "decorrelation_control": "monosemanticity",
    "feature_decorrelation": "monosemanticity",
    "load_prompts": "monosemanticity",
    "measure_monosemanticity": "monosemanticity",
    "participation_ratio": "monosemanticity",
    "top_tokens": "monosemanticity",
    "weight_proxy": "monosemanticity",
    "decorrelation_penalty": "penalty",
    "PRECISION_CHOICES": "precision",
    "choose_precision": "precision",
    "cpu_has_native_bf16": "precision",
    "PAPER_RECIPE": "trainer",
    "DecPOConfig": "trainer",
    "DecPOTrainer": "trainer",
    "DecorrelationArguments": "trainer",
    "DecorrelationMixin": "trainer",
    "DecorrelatedGRPOConfig": "trainers",
    "DecorrelatedGRPOTrainer": "trainers",
    "DecorrelatedKTOConfig": "trainers",
    "DecorrelatedKTOTrainer": "trainers",
    "DecorrelatedRLOOConfig": "trainers",
    "DecorrelatedRLOOTrainer": "trainers",
    "DecorrelatedRewardConfig": "trainers",
    "DecorrelatedRewardTrainer": "trainers",
    "DecorrelatedSFTConfig": "trainers",
    "DecorrelatedSFTTrainer": "trainers",
}

__all__ = sorted(_EXPORTS, key=lambda name: (not name.isupper(), not name[0].isupper(), name))


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # the next access is a plain attribute lookup
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
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
    from .precision import PRECISION_CHOICES, choose_precision, cpu_has_native_bf16
    from .trainer import PAPER_RECIPE, DecorrelationArguments, DecorrelationMixin, DecPOConfig, DecPOTrainer
    from .trainers import (
        DecorrelatedGRPOConfig,
        DecorrelatedGRPOTrainer,
        DecorrelatedKTOConfig,
        DecorrelatedKTOTrainer,
        DecorrelatedRewardConfig,
        DecorrelatedRewardTrainer,
        DecorrelatedRLOOConfig,
        DecorrelatedRLOOTrainer,
        DecorrelatedSFTConfig,
        DecorrelatedSFTTrainer,
    )
