# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The decorrelation penalty on TRL's other trainers: the mechanism of `DecPOTrainer`
(:class:`~trl_decpo.trainer.mixin.DecorrelationMixin`), one config per trainer
(:mod:`.configs`), and per trainer its row map (:mod:`.sft`, :mod:`.kto`, :mod:`.reward`, :mod:`.online`).
docs/trainers.md says what a row is for each."""

from ..trainer.mixin import DecorrelationMixin
from .configs import (
    DecorrelatedGRPOConfig,
    DecorrelatedKTOConfig,
    DecorrelatedRewardConfig,
    DecorrelatedRLOOConfig,
    DecorrelatedSFTConfig,
)
from .kto import DecorrelatedKTOTrainer
from .online import DecorrelatedGRPOTrainer, DecorrelatedRLOOTrainer
from .reward import DecorrelatedRewardTrainer
from .sft import DecorrelatedSFTTrainer


__all__ = [
    "DecorrelatedGRPOConfig",
    "DecorrelatedGRPOTrainer",
    "DecorrelatedKTOConfig",
    "DecorrelatedKTOTrainer",
    "DecorrelatedRLOOConfig",
    "DecorrelatedRLOOTrainer",
    "DecorrelatedRewardConfig",
    "DecorrelatedRewardTrainer",
    "DecorrelatedSFTConfig",
    "DecorrelatedSFTTrainer",
    "DecorrelationMixin",
]
