# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The tiny-model factory: every tiny model of the tests, benchmarks and quick starts is built here.

Two entry points over the same config builders (:mod:`.families`) and the same construction (:func:`_instantiate`):

* :func:`tiny_config` / :func:`tiny_model_dir`: the quick-start architectures (:data:`ARCHITECTURES`), 4 layers by
  default, any size, saved to a folder with :func:`~.data.tiny_tokenizer`;
* :func:`tiny_family_config` / :func:`tiny_family_model`: one fixed tiny model per model family (:data:`FAMILIES`).

Every model takes ``forward(input_ids=..., attention_mask=...)`` (text only, also for the vision-language families)
and returns ``logits`` of shape ``[batch, seq, VOCAB_SIZE]``; one forward + backward on 8 x 16 tokens takes a few to a
few tens of milliseconds on CPU.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from ..utils import check_choice
from . import families as f
from .data import TOKENS, tiny_tokenizer


# family -> (config builder, model class name in transformers)
_SPECS: dict[str, tuple[Callable, str]] = {
    "llama": (f.llama, "LlamaForCausalLM"),
    "qwen2": (f.qwen2, "Qwen2ForCausalLM"),
    "qwen3": (f.qwen3, "Qwen3ForCausalLM"),
    "mistral": (f.mistral, "MistralForCausalLM"),
    "gemma2": (f.gemma2, "Gemma2ForCausalLM"),
    "gemma3": (f.gemma3, "Gemma3ForCausalLM"),
    "cohere2": (f.cohere2, "Cohere2ForCausalLM"),
    "olmo3": (f.olmo3, "Olmo3ForCausalLM"),
    "gpt2": (f.gpt2, "GPT2LMHeadModel"),
    "gpt_neox": (f.gpt_neox, "GPTNeoXForCausalLM"),
    "gptj": (f.gptj, "GPTJForCausalLM"),
    "falcon": (f.falcon, "FalconForCausalLM"),
    "starcoder2": (f.starcoder2, "Starcoder2ForCausalLM"),
    "opt": (f.opt, "OPTForCausalLM"),
    "phi3": (f.phi3, "Phi3ForCausalLM"),
    "bloom": (f.bloom, "BloomForCausalLM"),
    "mpt": (f.mpt, "MptForCausalLM"),
    "recurrent_gemma": (f.recurrent_gemma, "RecurrentGemmaForCausalLM"),
    "lfm2": (f.lfm2, "Lfm2ForCausalLM"),
    "nemotron_h": (f.nemotron_h, "NemotronHForCausalLM"),
    "jamba": (f.jamba, "JambaForCausalLM"),
    "mixtral": (f.mixtral, "MixtralForCausalLM"),
    "qwen2_moe": (f.qwen2_moe, "Qwen2MoeForCausalLM"),
    "qwen3_moe": (f.qwen3_moe, "Qwen3MoeForCausalLM"),
    "olmoe": (f.olmoe, "OlmoeForCausalLM"),
    "gpt_oss": (f.gpt_oss, "GptOssForCausalLM"),
    "glm4_moe": (f.glm4_moe, "Glm4MoeForCausalLM"),
    "deepseek_v3": (f.deepseek_v3, "DeepseekV3ForCausalLM"),
    "dbrx": (f.dbrx, "DbrxForCausalLM"),
    "gemma3_vlm": (f.gemma3_vlm, "Gemma3ForConditionalGeneration"),
    "qwen2_vl": (f.qwen2_vl, "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": (f.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration"),
    "llava": (f.llava, "LlavaForConditionalGeneration"),
    "idefics3": (f.idefics3, "Idefics3ForConditionalGeneration"),
    "smolvlm": (f.smolvlm, "SmolVLMForConditionalGeneration"),
}

FAMILIES: list[str] = list(_SPECS)
"""Every family :func:`tiny_family_model` builds."""

CONFIGS: dict[str, Callable] = {family: builder for family, (builder, _) in _SPECS.items()}
"""``CONFIGS[family]()`` is a fresh config of the family's tiny model."""

MODEL_CLASSES: dict[str, str] = {family: class_name for family, (_, class_name) in _SPECS.items()}
"""The transformers model class (name) of each family."""

VLM_FAMILIES: list[str] = ["gemma3_vlm", "qwen2_vl", "qwen2_5_vl", "llava", "idefics3", "smolvlm"]
HYBRID_FAMILIES: list[str] = ["lfm2", "nemotron_h", "jamba", "recurrent_gemma"]  # layers of different kinds of mixer
MOE_FAMILIES: list[str] = [
    *("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "glm4_moe", "deepseek_v3", "jamba", "nemotron_h"),
    "dbrx",
]

# Where each family's decoder layers live, relative to the model tiny_family_model returns
LAYER_LISTS: dict[str, str] = {
    family: "model.language_model.layers" if family in VLM_FAMILIES else "model.layers" for family in FAMILIES
} | {
    "gpt2": "transformer.h",
    "gptj": "transformer.h",
    "falcon": "transformer.h",
    "bloom": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "mpt": "transformer.blocks",
    "dbrx": "transformer.blocks",
    "idefics3": "model.text_model.layers",
    "smolvlm": "model.text_model.layers",
}

ARCHITECTURES = ("llama", "llama64", "mistral", "qwen2", "gpt2", "gpt_neox")
"""What :func:`tiny_config` builds: the sized families (:data:`.families.SIZED`) and ``llama64``."""


def _instantiate(config, class_name: str, seed: int):
    """A float32 ``transformers.<class_name>`` of ``config``, initialised from ``seed``, in train mode as
    ``from_config`` leaves it, its generation config given the tiny tokenizer's special tokens."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, class_name)._from_config(config, dtype=torch.float32)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, TOKENS[key])
    return model


def tiny_config(arch: str = "llama", layers: int = 4, hidden: int = 32, intermediate: int = 48):
    """A transformers config of a tiny model of architecture ``arch`` (one of :data:`ARCHITECTURES`): its family's
    builder at these sizes (GPT-2 with GPT2Config's default dropout, 0.1).

    ``llama64`` is a Llama of width 64 / 128: bitsandbytes' CPU 4-bit kernels need widths that are multiples of 64.
    """
    if arch == "llama64":
        arch, hidden, intermediate = "llama", 64, 128
    if arch == "gpt2":
        return f.gpt2(hidden, intermediate, layers, dropout=0.1)
    if arch in f.SIZED:
        return f.SIZED[arch](hidden, intermediate, layers)
    check_choice("arch", arch, ARCHITECTURES)


def tiny_model_dir(arch: str = "llama", layers: int = 4, seed: int = 0, folder: str | None = None, **sizes) -> str:
    """Save a tiny random model (:func:`tiny_config`) and :func:`tiny_tokenizer` to ``folder`` (default: a new
    temporary folder) and return it; ``from_pretrained(folder)`` loads them."""
    config = tiny_config(arch, layers, **sizes)
    model = _instantiate(config, MODEL_CLASSES["llama" if arch == "llama64" else arch], seed)
    folder = folder or tempfile.mkdtemp(prefix=f"trl-decpo-tiny-{arch}-")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_family_config(family: str):
    """A fresh config of the tiny model of ``family`` (one of :data:`FAMILIES`)."""
    if family not in _SPECS:
        raise ValueError(f"Unknown family {family!r}; expected one of {FAMILIES}")
    return _SPECS[family][0]()


def tiny_family_model(family: str, seed: int = 0):
    """A tiny random float32 model of ``family`` (one of :data:`FAMILIES`), initialised from ``seed``, in train mode
    as ``from_config`` leaves it, and :func:`tiny_tokenizer`: ``(model, tokenizer)``."""
    return _instantiate(tiny_family_config(family), MODEL_CLASSES[family], seed), tiny_tokenizer()


def family_decoder_layers(model, family: str):
    """The ``nn.ModuleList`` of decoder layers of a model built by :func:`tiny_family_model`."""
    return model.get_submodule(LAYER_LISTS[family])
