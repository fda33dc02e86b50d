# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The tiny vocabulary, its word-level tokenizer, the preference pairs and a task scorer over them."""

from __future__ import annotations


WORDS = (
    "the a cat dog sat on mat ran fast slow red blue green big small good bad happy sad yes no agree disagree "
    "i you we they think know said is was be not very truly answer question because so and or but"
).split()

VOCAB_SIZE = len(WORDS) + 3  # <pad>, <eos>, <unk>

# The token ids of tiny_tokenizer(): <pad> = 0, <eos> = 1, and <eos> doubles as <bos> (every tiny model's config)
TOKENS = dict(vocab_size=VOCAB_SIZE, pad_token_id=0, eos_token_id=1, bos_token_id=1)

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
