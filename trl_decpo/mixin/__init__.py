# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The mechanism that adds the decorrelation penalty to any TRL trainer: `DecorrelationMixin` (:mod:`.mixin`), the
`decorrelation_*` fields every config shares (`DecorrelationArguments`, :mod:`.arguments`), the refusals before any
step (:mod:`.checks`), the penalty of one step from the captured rows (:mod:`.penalties`) and the model card
(:mod:`.card`). The trainers themselves are in :mod:`trl_decpo.trainers`."""

from .arguments import DecorrelationArguments
from .card import DECPO_PAPER
from .mixin import DecorrelationMixin


__all__ = ["DECPO_PAPER", "DecorrelationArguments", "DecorrelationMixin"]
