# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedKTOTrainer`: `trl.KTOTrainer` plus the decorrelation penalty; one row per completion."""

from __future__ import annotations

from dataclasses import dataclass

from trl import KTOConfig, KTOTrainer

from ..compat import capture_paused_in_kto_kl_pass
from ..mixin import DecorrelationMixin
from ..mixin.arguments import DECORRELATED_CONFIG_DOC, DecorrelationArguments, both_sequences_only


@dataclass
class DecorrelatedKTOConfig(DecorrelationArguments, KTOConfig):
    __doc__ = DECORRELATED_CONFIG_DOC.format(
        trainer="DecorrelatedKTOTrainer", base="KTOConfig", name="KTO", trainer_base="KTOTrainer"
    )
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = both_sequences_only()


@capture_paused_in_kto_kl_pass
class DecorrelatedKTOTrainer(DecorrelationMixin, KTOTrainer):
    """`trl.KTOTrainer` with the decorrelation penalty, configured by a [`DecorrelatedKTOConfig`].

    Row map: one row per example of the batch (prompt + completion, desirable and undesirable alike), its completion
    from `completion_mask`. KTO's first policy forward is a no-grad pass over its KL batch (mismatched completions):
    the capture is paused around it, so the rows come from the policy forward with gradients.
    """

    _decorrelation_config = DecorrelatedKTOConfig

    def decorrelation_batch(self, inputs: dict) -> dict:
        return {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs.get("attention_mask"),
            "completion_mask": inputs.get("completion_mask"),
        }
