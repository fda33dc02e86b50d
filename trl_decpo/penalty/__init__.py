# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The DecPO penalty as pure tensor math: no model, no hooks, no Trainer."""

from .decorrelation import DEFAULT_EPS, NORMALIZE_CHOICES, REDUCTION_CHOICES, TARGET_CHOICES, decorrelation_penalty
from .gram import gram_minus_identity_sq


__all__ = [
    "DEFAULT_EPS",
    "NORMALIZE_CHOICES",
    "REDUCTION_CHOICES",
    "TARGET_CHOICES",
    "decorrelation_penalty",
    "gram_minus_identity_sq",
]
