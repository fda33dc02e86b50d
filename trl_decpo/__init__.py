# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""trl-decpo: DecPO (DPO + activation decorrelation, Yan et al. arXiv 2406.17969) for Hugging Face TRL."""

__version__ = "0.1.0"

from .capture import ActivationCapture, Site, build_row_index, count_decpo_hooks, resolve_sites
from .config import PAPER_RECIPE, DecPOConfig
from .decorrelation import decorrelation_penalty
from .trainer import DecPOTrainer


__all__ = [
    "PAPER_RECIPE",
    "ActivationCapture",
    "DecPOConfig",
    "DecPOTrainer",
    "Site",
    "build_row_index",
    "count_decpo_hooks",
    "decorrelation_penalty",
    "resolve_sites",
]
