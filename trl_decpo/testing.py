# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Tiny models, a tokenizer and a preference dataset built locally (no Hub access), for tests, benchmarks and
quick starts that must run anywhere in seconds.

    from trl_decpo.testing import tiny_model_dir, tiny_preference_dataset

    path = tiny_model_dir("llama")  # a random 4-layer Llama and its tokenizer, saved to a temporary folder
"""

from __future__ import annotations

import os
import tempfile

from .utils import check_choice


WORDS = (
    "the a cat dog sat on mat ran fast slow red blue green big small good bad happy sad yes no agree disagree "
    "i you we they think know said is was be not very truly answer question because so and or but"
).split()

VOCAB_SIZE = len(WORDS) + 3  # <pad>, <eos>, <unk>

PAIRS = [
    ("the cat sat on", "the mat", "a dog"),
    ("i think you are", "very good", "bad"),
    ("do you agree", "yes i agree because the answer is good", "no"),
    ("the dog ran", "fast", "slow and sad"),
    ("we know the answer is", "red", "blue green"),
    ("they said", "big", "small"),
    ("is the cat happy", "yes", "no the cat is sad"),
    ("a question", "the answer", "not an answer"),
]

ARCHITECTURES = ("llama", "llama64", "mistral", "qwen2", "gpt2", "gpt_neox")
NEGATIVE_WORDS = frozenset(("bad", "sad", "no", "not", "disagree", "slow"))


def tiny_tokenizer():
    """A word-level tokenizer over :data:`WORDS` (``<pad>`` = 0, ``<eos>`` = 1, ``<unk>`` = 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_config(arch: str = "llama", layers: int = 4, hidden: int = 32, intermediate: int = 48):
    """A transformers config of a tiny model of architecture ``arch`` (one of :data:`ARCHITECTURES`).

    ``llama64`` is a Llama of width 64 / 128: bitsandbytes' CPU 4-bit kernels need widths that are multiples of 64.
    """
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(vocab_size=VOCAB_SIZE, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if arch == "llama64":
        arch, hidden, intermediate = "llama", 64, 128
    sizes = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=4)
    if arch in ("llama", "mistral", "qwen2"):
        config_class = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
        return config_class(**sizes, num_key_value_heads=2, max_position_embeddings=128, **common)
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=128, n_inner=intermediate, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(**sizes, max_position_embeddings=128, **common)
    check_choice("arch", arch, ARCHITECTURES)


def tiny_model_dir(arch: str = "llama", layers: int = 4, seed: int = 0, folder: str | None = None, **sizes) -> str:
    """Save a tiny random model (:func:`tiny_config`) and :func:`tiny_tokenizer` to ``folder`` (default: a new
    temporary folder) and return it; ``from_pretrained(folder)`` loads them."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, layers, **sizes))
    folder = folder or tempfile.mkdtemp(prefix=f"trl-decpo-tiny-{arch}-")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_preference_dataset(n: int = 8):
    """``n`` prompt / chosen / rejected rows cycling over :data:`PAIRS` (completions start with a space)."""
    from datasets import Dataset

    rows = [PAIRS[i % len(PAIRS)] for i in range(n)]
    return Dataset.from_dict(
        {"prompt": [r[0] for r in rows], "chosen": [" " + r[1] for r in rows], "rejected": [" " + r[2] for r in rows]}
    )


def negative_word_rate(texts: list[str]) -> list[float]:
    """A task scorer for the tiny vocabulary (``load_scorer("trl_decpo.testing:negative_word_rate")``): the fraction of
    each text's words in :data:`NEGATIVE_WORDS`, 0 for an empty text. A stand-in for a real scorer such as
    ``profanity_check:predict_prob`` in examples that must run anywhere."""
    rates = []
    for text in texts:
        words = text.split()
        rates.append(sum(word in NEGATIVE_WORDS for word in words) / len(words) if words else 0.0)
    return rates
