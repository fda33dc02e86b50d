# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Builders of tiny decorrelated (and plain) TRL trainers for the tests of trl_decpo.trainers, and a recorder of the
rows the penalty pools."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    KTOConfig,
    KTOTrainer,
    RewardConfig,
    RewardTrainer,
    RLOOConfig,
    RLOOTrainer,
    SFTConfig,
    SFTTrainer,
)

from tests.helpers import PAIRS, base_kwargs, make_tokenizer, model_path
from trl_decpo import DecPOConfig, DecPOTrainer
from trl_decpo.capture import RowIndex
from trl_decpo.trainers import (
    DecorrelatedGRPOConfig,
    DecorrelatedGRPOTrainer,
    DecorrelatedKTOConfig,
    DecorrelatedKTOTrainer,
    DecorrelatedRewardConfig,
    DecorrelatedRewardTrainer,
    DecorrelatedRLOOConfig,
    DecorrelatedRLOOTrainer,
    DecorrelatedSFTConfig,
    DecorrelatedSFTTrainer,
)


KINDS = ("sft", "reward", "kto", "grpo", "rloo")
ALL_KINDS = ("dpo", *KINDS)  # DecPOTrainer is the DPO instance of the same mechanism: the shared contract holds for it
LAYERS = 2  # tiny 2-layer Llama; the penalty sits on layer 1, layer 0 is upstream of it

CLASSES = {
    "dpo": (DPOTrainer, DPOConfig, DecPOTrainer, DecPOConfig),
    "sft": (SFTTrainer, SFTConfig, DecorrelatedSFTTrainer, DecorrelatedSFTConfig),
    "reward": (RewardTrainer, RewardConfig, DecorrelatedRewardTrainer, DecorrelatedRewardConfig),
    "kto": (KTOTrainer, KTOConfig, DecorrelatedKTOTrainer, DecorrelatedKTOConfig),
    "grpo": (GRPOTrainer, GRPOConfig, DecorrelatedGRPOTrainer, DecorrelatedGRPOConfig),
    "rloo": (RLOOTrainer, RLOOConfig, DecorrelatedRLOOTrainer, DecorrelatedRLOOConfig),
}


def reward_len(completions, **kwargs):
    return [float(len(c)) for c in completions]


def dataset(kind: str, n: int = 8) -> Dataset:
    rows = [PAIRS[i % len(PAIRS)] for i in range(n)]
    prompts = [r[0] for r in rows]
    if kind == "sft":
        return Dataset.from_dict({"prompt": prompts, "completion": [" " + r[1] for r in rows]})
    if kind in ("reward", "dpo"):
        return Dataset.from_dict(
            {"prompt": prompts, "chosen": [" " + r[1] for r in rows], "rejected": [" " + r[2] for r in rows]}
        )
    if kind == "kto":
        return Dataset.from_dict(
            {
                "prompt": prompts,
                "completion": [" " + (r[1] if i % 2 == 0 else r[2]) for i, r in enumerate(rows)],
                "label": [i % 2 == 0 for i in range(n)],
            }
        )
    return Dataset.from_dict({"prompt": prompts})


def kind_kwargs(kind: str) -> dict:
    if kind in ("grpo", "rloo"):
        return dict(num_generations=2, max_completion_length=4, beta=0.0)
    return dict(max_length=32)


def config(kind: str, tmp_path, coef: float | None = 1.0, **overrides):
    """The decorrelated config of ``kind`` (``coef=None``: the plain TRL config)."""
    _, plain_config, _, decorrelated_config = CLASSES[kind]
    values = {**base_kwargs(tmp_path), "max_steps": 1, **kind_kwargs(kind), **overrides}
    if coef is None:
        return plain_config(**values)
    return decorrelated_config(**{"decorrelation_layers": [1], "decorrelation_coef": coef, **values})


def build(
    kind: str,
    tmp_path,
    coef: float | None = 1.0,
    model=None,
    plain: bool = False,
    evaluate: bool = False,
    eval_rows: int = 8,
    peft_config=None,
    **overrides,
):
    """A tiny trainer of ``kind``: decorrelated (``plain=False``) or TRL's own class with a plain config; with
    ``evaluate``, the training data (``eval_rows`` rows, cycling over 8 prompts) is also its ``eval_dataset``."""
    plain_trainer, _, decorrelated_trainer, _ = CLASSES[kind]
    trainer_class = plain_trainer if plain else decorrelated_trainer
    args = config(kind, tmp_path, None if plain else coef, **overrides)
    torch.manual_seed(0)  # the reward head is initialised when the model loads; generation samples
    kwargs = dict(args=args, train_dataset=dataset(kind), processing_class=make_tokenizer())
    if evaluate:
        kwargs["eval_dataset"] = dataset(kind, eval_rows)
    if kind in ("grpo", "rloo"):
        kwargs["reward_funcs"] = reward_len
    if peft_config is not None:
        kwargs["peft_config"] = peft_config
    return trainer_class(model=model if model is not None else model_path("llama", LAYERS), **kwargs)


def tiny_causal_lm():
    return AutoModelForCausalLM.from_pretrained(model_path("llama", LAYERS), dtype=torch.float32)


class GradRecorder(TrainerCallback):
    """The gradient of one parameter just before the optimizer step."""

    def __init__(self, trainer, name: str):
        self.param = dict(trainer.model.named_parameters())[name]
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads.append(self.param.grad.detach().clone())


def record_pooling(monkeypatch) -> list[dict]:
    """Every pooling of captured activations: the flat token indices, the activations' shape, whether grad was on, and
    the pooled rows."""
    calls = []
    original = RowIndex.pool

    def pool(self, acts):
        rows = original(self, acts)
        calls.append(
            dict(
                token_index=self.token_index.tolist(),
                shape=tuple(acts.shape),
                grad=torch.is_grad_enabled(),
                rows=rows.detach().clone(),
            )
        )
        return rows

    monkeypatch.setattr(RowIndex, "pool", pool)
    return calls


def record_batches(trainer) -> list[dict]:
    """The row-map tensors of each ``compute_loss`` call of ``trainer``."""
    batches = []
    row_map = trainer.decorrelation_batch

    def recording(inputs):
        result = row_map(inputs)
        batches.append({key: value.detach().clone() for key, value in result.items() if value is not None})
        return result

    trainer.decorrelation_batch = recording
    return batches


def last_real_positions(attention_mask: torch.Tensor) -> list[int]:
    """Flat index of each row's last nonzero-mask position."""
    batch, seq_len = attention_mask.shape
    positions = torch.arange(seq_len) * (attention_mask != 0)
    return (torch.arange(batch) * seq_len + positions.amax(1)).tolist()
