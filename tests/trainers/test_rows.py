# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The rows each decorrelated trainer pools, counted and located in its batch; the forwards it must never capture
(KTO's KL batch, GRPO / RLOO generation and old-policy forwards) are not."""

from __future__ import annotations

import pytest
import torch

from tests.trainers.decorrelated_helpers import build, last_real_positions, record_batches, record_pooling


def _train(kind, tmp_path, monkeypatch, **overrides):
    trainer = build(kind, tmp_path, **overrides)
    batches = record_batches(trainer)
    pooled = record_pooling(monkeypatch)
    trainer.train()
    return trainer, batches, pooled


def test_sft_padded_batch_one_row_per_sequence_at_its_last_real_token(tmp_path, monkeypatch):
    trainer, batches, pooled = _train("sft", tmp_path, monkeypatch)
    (batch,) = batches
    assert len(pooled) == 1 and pooled[0]["grad"]
    assert pooled[0]["shape"][:2] == tuple(batch["input_ids"].shape)
    assert pooled[0]["token_index"] == last_real_positions(batch["attention_mask"])
    assert len(pooled[0]["token_index"]) == trainer.args.per_device_train_batch_size
    # completion-only loss: the prompt tokens are not in the completion mask, the last token (EOS) is
    completion = batch["completion_mask"].reshape(-1)
    assert completion[pooled[0]["token_index"]].all() and not batch["completion_mask"].all()


def test_sft_mean_pooling_averages_only_the_completion_tokens(tmp_path, monkeypatch):
    _, batches, pooled = _train("sft", tmp_path, monkeypatch, decorrelation_pooling="mean")
    (batch,) = batches
    assert pooled[0]["token_index"] == batch["completion_mask"].reshape(-1).nonzero().flatten().tolist()


def test_sft_packed_batch_one_row_per_packed_sequence(tmp_path, monkeypatch):
    trainer, batches, pooled = _train("sft", tmp_path, monkeypatch, packing=True)
    (batch,) = batches
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    positions = batch["position_ids"].reshape(-1)
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) > 1  # several sequences share the packed row
    ends = [start - 1 for start in starts[1:]] + [positions.numel() - 1]
    assert pooled[0]["token_index"] == ends
    assert len(ends) == trainer.args.per_device_train_batch_size * 2  # bfd packs the 8 examples into one row


def test_sft_padding_free_batch_one_row_per_sequence(tmp_path, monkeypatch):
    _, batches, pooled = _train("sft", tmp_path, monkeypatch, padding_free=True, max_length=None)
    (batch,) = batches
    starts = (batch["position_ids"].reshape(-1) == 0).nonzero().flatten().tolist()
    assert len(pooled[0]["token_index"]) == len(starts) == 4


def test_reward_rows_are_the_chosen_and_rejected_halves(tmp_path, monkeypatch):
    trainer, batches, pooled = _train("reward", tmp_path, monkeypatch)
    (batch,) = batches
    pairs = trainer.args.per_device_train_batch_size
    assert batch["input_ids"].shape[0] == 2 * pairs
    assert pooled[0]["token_index"] == last_real_positions(batch["attention_mask"])


@pytest.mark.parametrize("sequences", ["chosen", "rejected"])
def test_reward_sequences_selects_one_half(tmp_path, monkeypatch, sequences):
    _, batches, pooled = _train("reward", tmp_path, monkeypatch, decorrelation_sequences=sequences)
    (batch,) = batches
    every = last_real_positions(batch["attention_mask"])
    half = len(every) // 2
    assert pooled[0]["token_index"] == (every[:half] if sequences == "chosen" else every[half:])


def test_kto_rows_come_from_the_grad_forward_never_the_kl_batch(tmp_path, monkeypatch):
    trainer, batches, pooled = _train("kto", tmp_path, monkeypatch)
    (batch,) = batches
    assert trainer.calculate_KL  # the KL forward runs in this setup ...
    assert trainer.decorrelation_capture.stats["paused"] == 1  # ... reached the hook, and was skipped
    assert trainer.decorrelation_capture.stats["captured"] == 1
    assert len(pooled) == 1 and pooled[0]["grad"]
    assert pooled[0]["shape"][:2] == tuple(batch["input_ids"].shape)
    assert pooled[0]["token_index"] == last_real_positions(batch["attention_mask"])
    assert len(pooled[0]["token_index"]) == trainer.args.per_device_train_batch_size


def test_kto_without_the_pause_would_capture_the_kl_forward(tmp_path, monkeypatch):
    """The pause is what keeps the KL batch out: with TRL's method called directly, the first (captured) forward of
    the hooked module is the no-grad KL one, and the penalty refuses its rows."""
    from trl import KTOTrainer

    trainer = build("kto", tmp_path)
    monkeypatch.setattr(type(trainer), "_compute_kl_logps", KTOTrainer._compute_kl_logps)
    with pytest.raises(RuntimeError, match="carry no gradient"):
        trainer.train()


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_online_rows_are_the_completions_never_the_generation_forward(tmp_path, monkeypatch, kind):
    trainer = build(kind, tmp_path)
    batches = record_batches(trainer)
    pooled = record_pooling(monkeypatch)
    module = trainer.decorrelation_sites[0].module
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    try:
        trainer.train()
    finally:
        handle.remove()
    (batch,) = batches
    assert calls.count(False) >= 1  # generation (and RLOO's old-policy) forwards ran through the hooked module
    assert len(pooled) == 1 and pooled[0]["grad"]  # only the policy forward with gradients was pooled
    assert trainer.decorrelation_capture.stats["captured"] == 1
    completions = trainer.args.per_device_train_batch_size
    assert batch["input_ids"].shape[0] == completions
    assert pooled[0]["shape"][:2] == tuple(batch["input_ids"].shape)
    assert pooled[0]["token_index"] == last_real_positions(batch["attention_mask"])
    prompt_len = batch["attention_mask"].shape[1] - batch["completion_mask"].sum(1).max().item()
    assert all(index % batch["input_ids"].shape[1] >= prompt_len for index in pooled[0]["token_index"])


def test_kto_with_peft_captures_the_policy_never_the_adapter_disabled_reference(tmp_path, monkeypatch):
    """With a PEFT model and no reference model, KTO's reference forward is the same module with the adapter off, run
    after the policy forward in the same `compute_loss`: the rows are the policy's (adapter on)."""
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["up_proj"], init_lora_weights=False)  # adapter != base
    trainer, batches, pooled = _train("kto", tmp_path, monkeypatch, peft_config=lora, learning_rate=0.0)
    (batch,) = batches
    assert len(pooled) == 1 and pooled[0]["grad"]
    captured = pooled[0]["rows"]

    def rows(adapter: bool) -> torch.Tensor:
        seen = []
        module = trainer.model.get_submodule("base_model.model.model.layers.1.mlp.up_proj")
        handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
        trainer.model.eval()
        try:
            with torch.no_grad():
                if adapter:
                    trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                else:
                    with trainer.model.disable_adapter():
                        trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        finally:
            handle.remove()
        flat = seen[0].reshape(-1, seen[0].shape[-1])
        return flat[pooled[0]["token_index"]]

    policy, reference = rows(adapter=True), rows(adapter=False)
    assert not torch.allclose(policy, reference, atol=1e-4)  # the two forwards differ at the hooked module ...
    torch.testing.assert_close(captured, policy, atol=1e-5, rtol=1e-4)  # ... and the rows are the policy's


def test_sft_assistant_only_rows_pool_only_the_assistant_tokens(tmp_path, monkeypatch):
    """`assistant_only_loss=True`: SFTTrainer folds the chat template's assistant mask into `labels`; `mean` pooling then
    averages exactly the assistant turn's tokens (never the user's)."""
    from datasets import Dataset

    from tests.helpers import make_tokenizer, model_path
    from tests.trainers.decorrelated_helpers import LAYERS, config
    from trl_decpo import DecorrelatedSFTTrainer

    tokenizer = make_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }} <eos> "
        "{% endgeneration %}{% else %}{{ m['content'] }} {% endif %}{% endfor %}"
    )
    chats = [
        [{"role": "user", "content": "the cat sat on"}, {"role": "assistant", "content": "the mat"}],
        [{"role": "user", "content": "do you agree"}, {"role": "assistant", "content": "yes i agree"}],
    ] * 2
    trainer = DecorrelatedSFTTrainer(
        model=model_path("llama", LAYERS),
        args=config("sft", tmp_path, decorrelation_pooling="mean", assistant_only_loss=True),
        train_dataset=Dataset.from_dict({"messages": chats}),
        processing_class=tokenizer,
    )
    batches = record_batches(trainer)
    pooled = record_pooling(monkeypatch)
    trainer.train()
    (batch,) = batches
    flat_ids = batch["input_ids"].reshape(-1)
    pooled_tokens = tokenizer.convert_ids_to_tokens(flat_ids[pooled[0]["token_index"]].tolist())
    assistant = [word for chat in chats for word in chat[1]["content"].split() + ["<eos>"]]
    # every assistant token and nothing of the user turns (rows come in the sampler's order)
    assert sorted(pooled_tokens) == sorted(assistant)
