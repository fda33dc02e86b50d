# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Completions of prompts under a model, for task scores: batched, left-padded, greedy unless asked to sample.

Prompts are tokenized as ``trl.DPOTrainer`` tokenizes a prompt (``monosemanticity.probes.tokenize_prompts``): text
with the tokenizer's own special tokens (a trailing EOS dropped), message lists through the chat template with the
generation prompt. Only the new tokens are decoded (special tokens skipped).

    from trl_decpo.evaluation import generate_completions

    completions = generate_completions(model, tokenizer, ["The movie was", "I think"], max_new_tokens=32)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..monosemanticity.probes import input_device, resolve_pad_id, tokenize_prompts
from ..utils import check_int
from .preference import NO_TEMPLATE


def _is_messages(prompt) -> bool:
    return isinstance(prompt, (list, tuple)) and bool(prompt) and all(isinstance(m, dict) for m in prompt)


def _generation_config(model, tokenizer, pad_id: int, max_new_tokens: int, do_sample: bool, temperature, top_p):
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    config = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.min_new_tokens = None
    config.do_sample = do_sample
    config.num_beams = 1
    config.num_return_sequences = 1
    config.pad_token_id = pad_id
    if tokenizer.eos_token_id is not None and config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if do_sample:
        config.temperature, config.top_p, config.top_k = temperature, top_p, None
    else:  # greedy: the checkpoint's sampling settings do not apply (and would warn)
        config.temperature = config.top_p = config.top_k = None
    return config


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    do_sample: bool = False,
    seed: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_prompt_length: int | None = None,
) -> list[str]:
    """The decoded completion (new tokens only) of each prompt, in the order of ``prompts``.

    Prompts are strings, lists of chat messages or lists of token ids; they are batched by length (``batch_size``
    per ``generate`` call) and left-padded. Greedy by default; ``do_sample=True`` samples with ``temperature`` and
    ``top_p``, reproducibly given ``seed`` (``torch.manual_seed(seed)`` once, before the first batch).
    ``max_prompt_length`` keeps the last this-many prompt tokens."""
    check_int("max_new_tokens", max_new_tokens)
    check_int("batch_size", batch_size)
    check_int("max_prompt_length", max_prompt_length, allow_none=True)
    if do_sample and not temperature > 0:
        raise ValueError(f"`temperature` must be > 0 when sampling, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"`top_p` must be in (0, 1], got {top_p!r}")
    prompts = list(prompts)
    if any(_is_messages(p) for p in prompts) and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(NO_TEMPLATE.format(what="prompts"))
    token_lists = tokenize_prompts(prompts, tokenizer, max_prompt_length)
    pad_id = resolve_pad_id(tokenizer, None)
    config = _generation_config(model, tokenizer, pad_id, max_new_tokens, do_sample, temperature, top_p)
    device = input_device(model)
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    completions: list[str | None] = [None] * len(token_lists)
    was_training = model.training
    model.eval()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                picked = order[start : start + batch_size]
                width = max(len(token_lists[i]) for i in picked)
                input_ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros_like(input_ids)
                for row, i in enumerate(picked):
                    ids = token_lists[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, width - len(ids) :] = 1
                output = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
                )
                new_tokens = output[:, width:].cpu()
                for row, i in enumerate(picked):
                    completions[i] = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return completions
