# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedRLOOConfig` and `DecorrelatedRLOOTrainer`: `trl.RLOOTrainer` plus the decorrelation penalty; rows as
GRPO's (one per completion of the step)."""

from __future__ import annotations

from dataclasses import dataclass

from trl import RLOOConfig, RLOOTrainer

from ..mixin import DecorrelationMixin
from ..mixin.arguments import DECORRELATED_CONFIG_DOC, DecorrelationArguments, both_sequences_only
from .grpo import completion_batch


@dataclass
class DecorrelatedRLOOConfig(DecorrelationArguments, RLOOConfig):
    __doc__ = DECORRELATED_CONFIG_DOC.format(
        trainer="DecorrelatedRLOOTrainer", base="RLOOConfig", name="RLOO", trainer_base="RLOOTrainer"
    )
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = both_sequences_only()


class DecorrelatedRLOOTrainer(DecorrelationMixin, RLOOTrainer):
    """`trl.RLOOTrainer` with the decorrelation penalty, configured by a [`DecorrelatedRLOOConfig`]; rows as in
    [`DecorrelatedGRPOTrainer`]."""

    _decorrelation_config = DecorrelatedRLOOConfig

    def decorrelation_batch(self, inputs: dict) -> dict:
        return completion_batch(inputs)
