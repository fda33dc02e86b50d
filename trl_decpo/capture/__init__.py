# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Activation capture, independent of any Trainer: which module to hook (:mod:`.sites`), which token positions make
the rows (:mod:`.rows`), the hooks that capture one forward pass (:mod:`.hooks`), and the penalty's gradient under
reentrant checkpointing (:mod:`.injection`)."""

from .hooks import ActivationCapture, count_decpo_hooks
from .injection import PenaltyInjection
from .rows import POOLING_CHOICES, SEQUENCES_CHOICES, RowIndex, build_row_index
from .sites import (
    DEFAULT_SITES,
    ResolvedSite,
    Site,
    canonical_name,
    decoder_layers,
    default_sites,
    describe_sites,
    is_moe_block,
    num_decoder_layers,
    resolve_measurement_sites,
    resolve_sites,
    unwrap_model,
)


__all__ = [
    "DEFAULT_SITES",
    "POOLING_CHOICES",
    "SEQUENCES_CHOICES",
    "ActivationCapture",
    "PenaltyInjection",
    "ResolvedSite",
    "RowIndex",
    "Site",
    "build_row_index",
    "canonical_name",
    "count_decpo_hooks",
    "decoder_layers",
    "default_sites",
    "describe_sites",
    "is_moe_block",
    "num_decoder_layers",
    "resolve_measurement_sites",
    "resolve_sites",
    "unwrap_model",
]
