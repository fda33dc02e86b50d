# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedGRPOConfig` and `DecorrelatedGRPOTrainer`: `trl.GRPOTrainer` plus the decorrelation penalty; one row
per completion of the step (`completion_batch`, shared with RLOO)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl import GRPOConfig, GRPOTrainer

from ..mixin import DecorrelationMixin
from ..mixin.arguments import DECORRELATED_CONFIG_DOC, DecorrelationArguments, both_sequences_only


def completion_batch(inputs: dict) -> dict:
    """The sequences the policy forward of ``compute_loss`` sees: left-padded prompt + right-padded completion; the
    completion is ``completion_mask`` (times ``tool_mask``, 0 on tool results, when there is one)."""
    prompt_mask, completion_mask = inputs["prompt_mask"], inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        completion_mask = completion_mask * inputs["tool_mask"]
    return {
        "input_ids": torch.cat((inputs["prompt_ids"], inputs["completion_ids"]), dim=1),
        "attention_mask": torch.cat((prompt_mask, inputs["completion_mask"]), dim=1),
        "completion_mask": torch.cat((torch.zeros_like(prompt_mask), completion_mask), dim=1),
    }


@dataclass
class DecorrelatedGRPOConfig(DecorrelationArguments, GRPOConfig):
    __doc__ = DECORRELATED_CONFIG_DOC.format(
        trainer="DecorrelatedGRPOTrainer", base="GRPOConfig", name="GRPO", trainer_base="GRPOTrainer"
    )
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = both_sequences_only()


class DecorrelatedGRPOTrainer(DecorrelationMixin, GRPOTrainer):
    """`trl.GRPOTrainer` with the decorrelation penalty, configured by a [`DecorrelatedGRPOConfig`].

    Row map: one row per completion of the micro-batch (prompt + completion; `last` pools the completion's last real
    token). Generation, old-policy and reference forwards run before `compute_loss`, so they are never captured. GRPO
    scales its loss for gradient accumulation; the penalty is scaled the same way.
    """

    _decorrelation_config = DecorrelatedGRPOConfig

    def decorrelation_batch(self, inputs: dict) -> dict:
        return completion_batch(inputs)
