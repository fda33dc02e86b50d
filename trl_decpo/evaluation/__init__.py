# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of trained models against a base: paired bootstrap statistics."""

from .stats import NO_DIFFERENCE, Comparison, bootstrap_weights, paired_bootstrap, weighted_mean


__all__ = ["NO_DIFFERENCE", "Comparison", "bootstrap_weights", "paired_bootstrap", "weighted_mean"]
