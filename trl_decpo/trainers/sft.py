# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedSFTTrainer`: `trl.SFTTrainer` plus the decorrelation penalty; one row per sequence."""

from __future__ import annotations

from trl import SFTTrainer

from ..trainer.mixin import DecorrelationMixin
from .configs import DecorrelatedSFTConfig


class DecorrelatedSFTTrainer(DecorrelationMixin, SFTTrainer):
    """`trl.SFTTrainer` with the decorrelation penalty, configured by a [`DecorrelatedSFTConfig`].

    Row map: one row per sequence. Padded batches: each row of the batch, its real tokens from `attention_mask`.
    Packed or padding-free batches (`packing=True`, `padding_free=True`): one row per packed sequence, found where
    `position_ids` restart at 0. The completion (for `mean` / `tokens` pooling) is the tokens the loss counts,
    `labels != -100`: completion-only and assistant-only masks are folded into the labels by `SFTTrainer`.
    """

    _decorrelation_config = DecorrelatedSFTConfig

    def decorrelation_batch(self, inputs: dict) -> dict:
        return {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs.get("attention_mask"),
            "completion_mask": inputs["labels"] != -100,
            "position_ids": inputs.get("position_ids") if inputs.get("attention_mask") is None else None,
        }
