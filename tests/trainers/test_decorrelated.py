# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What every decorrelated trainer (DecPO, SFT, Reward, KTO, GRPO, RLOO) shares: coefficient 0 is the TRL
trainer, the penalty reaches the gradients, the same refusals, hooks never left behind, metrics and model card."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tests.helpers import PAIRS, checkpointing, make_tokenizer, model_path, warnings_of
from tests.trainers.decorrelated_helpers import (
    ALL_KINDS,
    CLASSES,
    LAYERS,
    GradRecorder,
    build,
    dataset,
    reward_len,
    tiny_causal_lm,
)
from trl_decpo import MonosemanticityCallback
from trl_decpo.capture import RowIndex, count_decpo_hooks
from trl_decpo.compat import default_output_dir, trainer_card_identity


UPSTREAM = "model.layers.0.mlp.up_proj.weight"  # before the hooked layer 1, in the causal LM and the reward model


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_coefficient_zero_is_exactly_the_trl_trainer(tmp_path, kind):
    plain = build(kind, tmp_path / "plain", plain=True)
    plain.train()
    zero = build(kind, tmp_path / "zero", coef=0.0)
    zero.train()
    assert zero.decorrelation_capture is None and not zero.decorrelation_enabled
    assert trainer_card_identity(zero) == trainer_card_identity(plain)
    assert not any("decorrelation" in key for log in zero.state.log_history for key in log)
    for (name, a), b in zip(plain.model.named_parameters(), zero.model.parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_penalty_reaches_the_gradient_and_is_logged_and_carded(tmp_path, kind):
    grads = {}
    for coef in (0.0, 1.0):
        trainer = build(kind, tmp_path / str(coef), coef=coef)
        recorder = GradRecorder(trainer, UPSTREAM)
        trainer.add_callback(recorder)
        trainer.train()
        grads[coef] = recorder.grads[0]
        assert count_decpo_hooks(trainer.model) == 0
    assert not torch.allclose(grads[0.0], grads[1.0])
    logged = [log for log in trainer.state.log_history if "decorrelation/penalty" in log]
    assert logged and logged[0]["decorrelation/penalty"] > 0
    assert logged[0]["decorrelation/layer_1"] == pytest.approx(logged[0]["decorrelation/penalty"])
    # the trainer's own loss is logged under its TRL name; TRL's `loss` is the optimised total
    step = next(log for log in trainer.state.log_history if "loss" in log and "decorrelation/penalty" in log)
    base = trainer.decorrelation_base_name()
    assert step["loss"] == pytest.approx(step[f"decorrelation/{base.lower()}_loss"] + step["decorrelation/penalty"])
    trainer.create_model_card()
    with open(os.path.join(trainer.args.output_dir, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert (
        "- decpo" in card
        and "- decorrelation" in card
        and f"- {kind if kind != 'reward' else 'reward-trainer'}" in card
    )
    heading = "## DecPO settings" if kind == "dpo" else "## Decorrelation settings"
    assert card.count(heading) == 1 and f"| `trainer` | `{base}` |" in card
    assert "| `decorrelation_layers` | `[1]` |" in card
    # the citation the card lacks: DPO's on the DecPO card (which cites DecPO as its trainer), DecPO's on the others
    assert card.count("yan2024encourage") == 1
    if kind == "dpo":
        assert "Direct Preference Optimization" in card.split(heading)[1]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_reentrant_checkpointing_gives_the_gradient_without_checkpointing(tmp_path, kind):
    """Under reentrant checkpointing the hooked layer runs under no_grad; the penalty's gradient is injected at its
    recomputation and the first step's gradient is the one without checkpointing (the logged penalty too)."""
    grads, penalties = {}, {}
    for name, settings in (("plain", {}), ("reentrant", checkpointing(True, {"use_reentrant": True}))):
        trainer = build(kind, tmp_path / name, **settings)
        recorder = GradRecorder(trainer, UPSTREAM)
        trainer.add_callback(recorder)
        trainer.train()
        grads[name] = recorder.grads[0]
        penalties[name] = next(log for log in trainer.state.log_history if "decorrelation/penalty" in log)
        assert count_decpo_hooks(trainer.model) == 0
    assert trainer.decorrelation_capture.without_grad == {1}  # the reentrant run's rows: captured without a gradient
    assert torch.allclose(grads["plain"], grads["reentrant"], atol=1e-6)
    assert penalties["reentrant"]["decorrelation/penalty"] == pytest.approx(
        penalties["plain"]["decorrelation/penalty"]
    )


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_no_trainable_parameter_before_the_hooked_layer_is_refused(tmp_path, kind):
    if kind == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(model_path("llama", LAYERS), num_labels=1)
    else:
        model = tiny_causal_lm()
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(f"model.layers.{LAYERS - 1}.") or "score" in name)
    with pytest.raises(ValueError, match="No trainable parameter lies at or before decoder layer 0"):
        build(kind, tmp_path, model=model, decorrelation_layers=[0])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_non_finite_penalty_stops_before_the_step_and_leaves_no_hook(tmp_path, kind, monkeypatch):
    trainer = build(kind, tmp_path, decorrelation_normalize=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    original = RowIndex.pool
    monkeypatch.setattr(RowIndex, "pool", lambda self, acts: original(self, acts) * 0.0 + 1e30)  # squares overflow
    with pytest.raises(FloatingPointError, match="decorrelation penalty at layer 1 is not finite"):
        trainer.train()
    assert count_decpo_hooks(trainer.model) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("given", [True, False], ids=["given-probes", "eval-dataset-prompts"])
def test_monosemanticity_callback_measures_each_trainer(tmp_path, kind, given):
    trainer = build(kind, tmp_path, evaluate=not given)
    probes = ["the cat sat on", "i think you are", "do you agree", "the dog ran"] if given else None
    callback = MonosemanticityCallback(trainer, probes=probes, plot=False)
    assert len(callback.probes) == (4 if given else 8)
    trainer.add_callback(callback)
    trainer.train()
    assert callback.hooked_layers == [1]
    assert [record["step"] for record in callback.history] == [0, 1]
    assert any("eval_monosemanticity/fd/layer_1" in log for log in trainer.state.log_history)
    assert os.path.exists(os.path.join(trainer.args.output_dir, "monosemanticity.json"))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_without_args_the_trainer_uses_its_decorrelated_config(kind, monkeypatch):
    """As TRL trainers build their own config when given no `args` (`<model id>-<name>`), a decorrelated trainer
    builds its decorrelated one, so that the penalty is on."""
    _, _, trainer_class, config_class = CLASSES[kind]
    seen = []

    class Stop(Exception):
        pass

    class Recorder(config_class):
        def __init__(self, output_dir, *args, **kwargs):
            seen.append(output_dir)
            raise Stop  # the configs' own defaults (bf16) would fail on CPU: which config, and its folder, is pinned

    monkeypatch.setattr(trainer_class, "_decorrelation_config", Recorder)
    model = tiny_causal_lm()
    extra = {"reward_funcs": reward_len} if kind in ("grpo", "rloo") else {}
    with pytest.raises(Stop):
        trainer_class(model=model, train_dataset=dataset(kind), processing_class=make_tokenizer(), **extra)
    base_name = trainer_class.decorrelation_base_name()
    assert seen == [default_output_dir(model, "DecPO" if kind == "dpo" else base_name)]
    assert seen[0].endswith("-DecPO" if kind == "dpo" else f"-{base_name}")


@pytest.mark.parametrize("kind", ["dpo", "kto"])
def test_monosemanticity_callback_takes_each_eval_prompt_once(tmp_path, kind):
    """An eval dataset that repeats its prompts (24 rows over 8 prompts; unpaired KTO data always does) gives each
    probe once: a probe paired with its own copy would count as perfectly correlated in FD."""
    trainer = build(kind, tmp_path, evaluate=True, eval_rows=24)
    callback = MonosemanticityCallback(trainer, plot=False)
    probes = MonosemanticityCallback(trainer, probes=[row[0] for row in PAIRS], plot=False).probes
    assert len(callback.probes) == len(PAIRS) == 8
    assert sorted(map(tuple, callback.probes.token_ids)) == sorted(map(tuple, probes.token_ids))
    assert len(MonosemanticityCallback(trainer, plot=False, max_samples=3).probes) == 3


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_training_with_trls_default_checkpointing_prints_no_warning(tmp_path, kind):
    """TRL's default (activation checkpointing on, under its deprecated name) and TRL's own calls of the deprecated
    checkpointing methods (reference forwards, generation), with an evaluation step: no warning (compat assumption 16;
    the decorrelated config is built inside the recorded call)."""

    def train():
        trainer = build(
            kind, tmp_path, activation_checkpointing=None, evaluate=True, eval_strategy="steps", eval_steps=1
        )
        trainer.train()
        return trainer

    trainer, shown = warnings_of(train)
    assert not shown, "\n".join(shown)
    assert trainer.args.activation_checkpointing and trainer.state.global_step == 1
