# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The config of each decorrelated trainer: the TRL config plus the shared ``decorrelation_*`` fields
(:class:`~trl_decpo.trainer.fields.DecorrelationArguments`), validated at construction.

Only the reward model's batch has ``[chosen; rejected]`` halves, so the other configs accept only
``decorrelation_sequences="both"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, KTOConfig, RewardConfig, RLOOConfig, SFTConfig

from ..trainer.fields import DecorrelationArguments


def _both_only():
    """``decorrelation_sequences`` for a trainer whose batch has no ``[chosen; rejected]`` halves: ``both`` only (in
    the command-line help too)."""
    return field(
        default="both",
        metadata={
            "help": "Which sequences give rows: only 'both' (every sequence), since this trainer's batches have no "
            "[chosen; rejected] halves.",
            "choices": ["both"],
        },
    )


_DOC = """
    Configuration class for [`{trainer}`]: every [`~trl.{base}`] field, plus the decorrelation penalty's
    `decorrelation_*` fields (the same as [`DecPOConfig`]'s; see docs/method.md): `loss = loss_{name} +
    decorrelation_coef * sum_layers ||M - I||_F^2`, with rows as described in docs/trainers.md.
    `decorrelation_coef=0` turns it off: the trainer is then exactly [`~trl.{trainer_base}`].
    """


@dataclass
class DecorrelatedSFTConfig(DecorrelationArguments, SFTConfig):
    __doc__ = _DOC.format(trainer="DecorrelatedSFTTrainer", base="SFTConfig", name="SFT", trainer_base="SFTTrainer")
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = _both_only()

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


@dataclass
class DecorrelatedKTOConfig(DecorrelationArguments, KTOConfig):
    __doc__ = _DOC.format(trainer="DecorrelatedKTOTrainer", base="KTOConfig", name="KTO", trainer_base="KTOTrainer")
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = _both_only()


@dataclass
class DecorrelatedRewardConfig(DecorrelationArguments, RewardConfig):
    __doc__ = _DOC.format(
        trainer="DecorrelatedRewardTrainer", base="RewardConfig", name="Reward", trainer_base="RewardTrainer"
    )


@dataclass
class DecorrelatedGRPOConfig(DecorrelationArguments, GRPOConfig):
    __doc__ = _DOC.format(
        trainer="DecorrelatedGRPOTrainer", base="GRPOConfig", name="GRPO", trainer_base="GRPOTrainer"
    )
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = _both_only()


@dataclass
class DecorrelatedRLOOConfig(DecorrelationArguments, RLOOConfig):
    __doc__ = _DOC.format(
        trainer="DecorrelatedRLOOTrainer", base="RLOOConfig", name="RLOO", trainer_base="RLOOTrainer"
    )
    _decorrelation_sequences = ("both",)
    decorrelation_sequences: str = _both_only()
