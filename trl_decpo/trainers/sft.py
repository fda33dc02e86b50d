# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedSFTTrainer`: `trl.SFTTrainer` plus the decorrelation penalty; one row per sequence."""

from __future__ import annotations

from dataclasses import dataclass

from trl import SFTConfig, SFTTrainer

from ..mixin import DecorrelationMixin
from ..mixin.arguments import DECORRELATED_CONFIG_DOC, DecorrelationArguments, both_sequences_only


@dataclass
class DecorrelatedSFTConfig(DecorrelationArguments, SFTConfig):
    __doc__ = DECORRELATED_CONFIG_DOC.format(
        trainer="DecorrelatedSFTTrainer", base="SFTConfig", name="SFT", trainer_base="SFTTrainer"
    )
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = both_sequences_only()

    def __post_init__(self):
        super().__post_init__()
        packed = self.padding_free or (self.packing and self.packing_strategy != "wrapped")
        if self.decorrelation_coef > 0 and self.packing and self.packing_strategy == "wrapped":
            raise ValueError(
                "`packing_strategy='wrapped'` cuts documents across rows and keeps no sequence boundaries, so the "
                "decorrelation penalty cannot find one row per sequence; use `packing_strategy='bfd'` (the default) "
                "or `decorrelation_coef=0`."
            )
        if self.decorrelation_coef > 0 and packed and self.pad_to_multiple_of is not None:
            raise ValueError(
                f"`pad_to_multiple_of={self.pad_to_multiple_of}` with packed / padding-free batches pads "
                "`position_ids` with 0, which makes every pad token look like a one-token sequence to the decorrelation "
                "penalty; set `pad_to_multiple_of=None` or `decorrelation_coef=0`."
            )


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
