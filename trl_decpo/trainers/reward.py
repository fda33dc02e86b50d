# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedRewardTrainer`: `trl.RewardTrainer` plus the decorrelation penalty; the chosen / rejected pair."""

from __future__ import annotations

from dataclasses import dataclass

from trl import RewardConfig, RewardTrainer

from ..mixin import DecorrelationMixin
from ..mixin.arguments import DECORRELATED_CONFIG_DOC, DecorrelationArguments


@dataclass
class DecorrelatedRewardConfig(DecorrelationArguments, RewardConfig):
    __doc__ = DECORRELATED_CONFIG_DOC.format(
        trainer="DecorrelatedRewardTrainer", base="RewardConfig", name="Reward", trainer_base="RewardTrainer"
    )


class DecorrelatedRewardTrainer(DecorrelationMixin, RewardTrainer):
    """`trl.RewardTrainer` with the decorrelation penalty, configured by a [`DecorrelatedRewardConfig`].

    Row map: the `[chosen; rejected]` batch of the reward model's single forward, one row per sequence
    (`decorrelation_sequences` selects the chosen half, the rejected half or both). The whole sequence (prompt and
    response) is the "completion" for `mean` / `tokens` pooling: reward batches carry no completion mask.
    """

    _decorrelation_config = DecorrelatedRewardConfig

    def decorrelation_batch(self, inputs: dict) -> dict:
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask")}
