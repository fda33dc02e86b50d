# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Measures of monosemanticity that the penalty does not train (docs/method.md). The penalty drives the Gram of the
MLP activations toward the identity, so FD, its control and sparsity, all statistics of those activations, partly
restate the objective. These instruments ask what a neuron stands for instead:

* :mod:`.sparse_probing`: how well the best ``k`` neurons separate a labelled concept, against the dense probe;
* :mod:`.sae`: how many features of a sparse autoencoder (SAELens, the optional extra ``[sae]``) write to each neuron,
  and how well the SAE explains a model's activations.

Both are pure tensor math on activations; :func:`~trl_decpo.compare_monosemanticity` and the
:class:`~trl_decpo.MonosemanticityCallback` capture the activations and run them.
"""

from .sae import SAEReport, SAESettings, load_sae, sae_report, train_sae
from .sparse_probing import DEFAULT_KS, SparseProbingResult, sparse_probing


__all__ = [
    "DEFAULT_KS",
    "SAEReport",
    "SAESettings",
    "SparseProbingResult",
    "load_sae",
    "sae_report",
    "sparse_probing",
    "train_sae",
]
