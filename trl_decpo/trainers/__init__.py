# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""One module per TRL trainer, each holding its config (the TRL config plus the `decorrelation_*` fields) and its
trainer (`DecorrelationMixin` on the TRL trainer, with the trainer's row map): :mod:`.dpo` (DecPO), :mod:`.sft`,
:mod:`.kto`, :mod:`.reward`, :mod:`.grpo`, :mod:`.rloo`. docs/trainers.md says what a row is for each."""

from .dpo import PAPER_RECIPE, DecPOConfig, DecPOTrainer
from .grpo import DecorrelatedGRPOConfig, DecorrelatedGRPOTrainer
from .kto import DecorrelatedKTOConfig, DecorrelatedKTOTrainer
from .reward import DecorrelatedRewardConfig, DecorrelatedRewardTrainer
from .rloo import DecorrelatedRLOOConfig, DecorrelatedRLOOTrainer
from .sft import DecorrelatedSFTConfig, DecorrelatedSFTTrainer


# the trainer classes and their configs by TRL's command name (`trl dpo`, `trl sft`, ...)
TRAINERS = {
    "dpo": (DecPOConfig, DecPOTrainer),
    "sft": (DecorrelatedSFTConfig, DecorrelatedSFTTrainer),
    "kto": (DecorrelatedKTOConfig, DecorrelatedKTOTrainer),
    "reward": (DecorrelatedRewardConfig, DecorrelatedRewardTrainer),
    "grpo": (DecorrelatedGRPOConfig, DecorrelatedGRPOTrainer),
    "rloo": (DecorrelatedRLOOConfig, DecorrelatedRLOOTrainer),
}

__all__ = [
    "PAPER_RECIPE",
    "TRAINERS",
    "DecPOConfig",
    "DecPOTrainer",
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
]
