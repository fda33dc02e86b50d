# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""trl-decpo: DecPO (DPO + activation decorrelation, Yan et al. arXiv 2406.17969) for Hugging Face TRL.

The package reads from the bottom up (``docs/design.md``):

* :mod:`trl_decpo.penalty`: the penalty as pure tensor math;
* :mod:`trl_decpo.capture`: which module is hooked, which tokens make the rows, the hooks;
* :mod:`trl_decpo.compat`: every assumption about TRL / transformers internals, each pinned by a test;
* :mod:`trl_decpo.mixin`: ``DecorrelationMixin``, the penalty on any TRL trainer, thin glue over the two above;
* :mod:`trl_decpo.trainers`: one module per TRL trainer, its config and its trainer (``dpo``: DecPO; ``sft``, ``kto``,
  ``reward``, ``grpo``, ``rloo``);
* :mod:`trl_decpo.independent`: measures the penalty does not train (k-sparse probing, a sparse autoencoder);
* :mod:`trl_decpo.monosemanticity`: the proxies, the measurement, the callback, the figures;
* :mod:`trl_decpo.evaluation`: trained models against their base, with paired bootstrap intervals;
* :mod:`trl_decpo.precision`: bf16 where the hardware runs it natively, float32 otherwise;
* :mod:`trl_decpo.cli`: the ``trl-decpo`` command.

The public API is the names below, by what they are for; internals stay importable from their subpackages. They are
imported on first use (PEP 562), so that ``import trl_decpo`` and ``trl-decpo --help``
load neither torch nor TRL; ``from trl_decpo import DecPOTrainer`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


__version__ = "0.3.0"

_GROUPS = {
    # training: the trainers and their configs (TRL's, plus the decorrelation_* fields), the mechanism, the recipe
    "trainers": (
        "PAPER_RECIPE",
        "DecPOConfig",
        "DecPOTrainer",
        "DecorrelatedGRPOConfig",
        "DecorrelatedGRPOTrainer",
        "DecorrelatedKTOConfig",
        "DecorrelatedKTOTrainer",
        "DecorrelatedRLOOConfig",
        "DecorrelatedRLOOTrainer",
        "DecorrelatedRewardConfig",
        "DecorrelatedRewardTrainer",
        "DecorrelatedSFTConfig",
        "DecorrelatedSFTTrainer",
    ),
    "mixin": ("DecorrelationArguments", "DecorrelationMixin"),
    # the penalty as tensor math
    "penalty": ("decorrelation_penalty",),
    # measuring monosemanticity: during training (the callback), on any model, and the proxies themselves
    "monosemanticity": (
        "MonosemanticityCallback",
        "MonosemanticityReport",
        "ProxyAccumulator",
        "compare_monosemanticity",
        "activation_sparsity",
        "decorrelation_control",
        "feature_decorrelation",
        "load_prompts",
        "measure_monosemanticity",
        "participation_ratio",
        "top_tokens",
        "weight_proxy",
        "weighted_control",
        "weighted_feature_decorrelation",
    ),
    # measures the penalty does not train: k-sparse probing of neurons on labelled concepts, a sparse autoencoder
    "independent": ("SAESettings", "load_sae", "sae_report", "sparse_probing", "train_sae"),
    # trained models against their base, with paired bootstrap intervals
    "evaluation": (
        "evaluate_model",
        "evaluate_models",
        "proxy_differences",
        "dpo_pair_rewards",
        "generate_completions",
        "load_scorer",
        "paired_bootstrap",
        "preference_logps",
        "weighted_mean",
    ),
    "precision": ("choose_precision",),
}
# public name -> the subpackage that defines it
_EXPORTS = {name: module for module, names in _GROUPS.items() for name in names}

__all__ = [name for names in _GROUPS.values() for name in names]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # the next access is a plain attribute lookup
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .evaluation import (
        dpo_pair_rewards,
        evaluate_model,
        evaluate_models,
        generate_completions,
        load_scorer,
        paired_bootstrap,
        preference_logps,
        proxy_differences,
        weighted_mean,
    )
    from .independent import SAESettings, load_sae, sae_report, sparse_probing, train_sae
    from .mixin import DecorrelationArguments, DecorrelationMixin
    from .monosemanticity import (
        MonosemanticityCallback,
        MonosemanticityReport,
        ProxyAccumulator,
        activation_sparsity,
        compare_monosemanticity,
        decorrelation_control,
        feature_decorrelation,
        load_prompts,
        measure_monosemanticity,
        participation_ratio,
        top_tokens,
        weight_proxy,
        weighted_control,
        weighted_feature_decorrelation,
    )
    from .penalty import decorrelation_penalty
    from .precision import choose_precision
    from .trainers import (
        PAPER_RECIPE,
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
        DecPOConfig,
        DecPOTrainer,
    )
