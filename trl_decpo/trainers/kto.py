# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelatedKTOTrainer`: `trl.KTOTrainer` plus the decorrelation penalty; one row per completion."""

from __future__ import annotations

from trl import KTOTrainer

from ..trainer.mixin import DecorrelationMixin
from .configs import DecorrelatedKTOConfig


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

    def _compute_kl_logps(self, model, batch):
        if self.decorrelation_capture is None:
            return super()._compute_kl_logps(model, batch)
        with self.decorrelation_capture.paused():
            return super()._compute_kl_logps(model, batch)
