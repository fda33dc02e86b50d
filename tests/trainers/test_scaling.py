# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The penalty follows each trainer's gradient-accumulation scaling: divided by the accumulation steps exactly when the
trainer's own loss is (GRPO always in training; SFT when the loss is normalised by `num_items_in_batch`)."""

from __future__ import annotations

import pytest
import torch

import trl_decpo.mixin.mixin as mixin
from tests.trainers.decorrelated_helpers import CLASSES, build


@pytest.mark.parametrize(
    ("kind", "num_items", "divided"),
    [("grpo", None, True), ("rloo", None, False), ("kto", None, False), ("sft", 7, True), ("sft", None, False)],
)
def test_penalty_is_scaled_for_gradient_accumulation_as_the_trainer_loss(
    tmp_path, monkeypatch, kind, num_items, divided
):
    trainer = build(kind, tmp_path, coef=2.0, gradient_accumulation_steps=4)
    trl_class = CLASSES[kind][0]

    # The trainer's own loss is 0 (after a forward that fills the hooks), and the penalty a constant 1: what
    # compute_loss returns is the scaled penalty.
    def zero_loss(self, model, inputs, **kwargs):
        return model(input_ids=self.decorrelation_batch(inputs)["input_ids"]).logits.sum() * 0.0

    monkeypatch.setattr(trl_class, "compute_loss", zero_loss)
    monkeypatch.setattr(
        mixin, "layer_penalties", lambda sites, rows, args, training, deferred: (torch.ones(()), torch.ones(1))
    )
    ids = torch.ones(2, 3, dtype=torch.long)
    if kind in ("grpo", "rloo"):
        inputs = {"prompt_ids": ids, "prompt_mask": ids, "completion_ids": ids, "completion_mask": ids}
    else:
        inputs = {"input_ids": ids, "attention_mask": ids, "labels": ids, "completion_mask": ids}
    trainer.current_gradient_accumulation_steps = 4
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, inputs, num_items_in_batch=num_items)
    assert loss.item() == pytest.approx(2.0 / 4 if divided else 2.0)
    trainer.model.eval()  # evaluation is never scaled
    assert trainer.compute_loss(trainer.model, inputs, num_items_in_batch=num_items).item() == pytest.approx(2.0)
