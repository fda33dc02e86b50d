# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Tiny models, a tokenizer and a preference dataset built locally (no Hub access), for tests, benchmarks and
quick starts that must run anywhere in seconds. The one tiny-model factory of the project.

    from trl_decpo.testing import tiny_family_model, tiny_model_dir, tiny_preference_dataset

    path = tiny_model_dir("llama")  # a random 4-layer Llama and its tokenizer, saved to a temporary folder
    model, tokenizer = tiny_family_model("qwen3_moe")  # the tiny model of one of 35 families (FAMILIES)

Modules: :mod:`.data` (the vocabulary, tokenizer, preference pairs, a scorer), :mod:`.families` (each family's
config), :mod:`.models` (the factory: configs to models, folders, decoder-layer paths).
"""

from .data import (
    NEGATIVE_WORDS,
    PAIRS,
    VOCAB_SIZE,
    WORDS,
    negative_word_rate,
    tiny_preference_dataset,
    tiny_tokenizer,
)
from .models import (
    ARCHITECTURES,
    CONFIGS,
    FAMILIES,
    HYBRID_FAMILIES,
    LAYER_LISTS,
    MODEL_CLASSES,
    MOE_FAMILIES,
    VLM_FAMILIES,
    family_decoder_layers,
    tiny_config,
    tiny_family_config,
    tiny_family_model,
    tiny_model_dir,
)


__all__ = [
    "ARCHITECTURES",
    "CONFIGS",
    "FAMILIES",
    "HYBRID_FAMILIES",
    "LAYER_LISTS",
    "MODEL_CLASSES",
    "MOE_FAMILIES",
    "NEGATIVE_WORDS",
    "PAIRS",
    "VLM_FAMILIES",
    "VOCAB_SIZE",
    "WORDS",
    "family_decoder_layers",
    "negative_word_rate",
    "tiny_config",
    "tiny_family_config",
    "tiny_family_model",
    "tiny_model_dir",
    "tiny_preference_dataset",
    "tiny_tokenizer",
]
