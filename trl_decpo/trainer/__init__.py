# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The trainer glue: the mechanism any TRL trainer takes (`DecorrelationMixin`, :mod:`.mixin`; its fields,
`DecorrelationArguments`, :mod:`.fields`), `DecPOConfig` (:mod:`.config`), `DecPOTrainer` (:mod:`.trainer`), the up-front checks
(:mod:`.checks`), the model card (:mod:`.card`), and every assumption about TRL / transformers internals
(:mod:`.compat`)."""

from .card import DECPO_PAPER
from .config import PAPER_RECIPE, DecPOConfig
from .fields import DecorrelationArguments
from .mixin import DecorrelationMixin
from .trainer import DecPOTrainer


__all__ = [
    "DECPO_PAPER",
    "PAPER_RECIPE",
    "DecPOConfig",
    "DecPOTrainer",
    "DecorrelationArguments",
    "DecorrelationMixin",
]
