# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Tiny random models, one per architecture family, built from transformers' config classes (no Hub access).

    from tests.families import FAMILIES, tiny_family_model

    model, tokenizer = tiny_family_model("qwen3_moe")  # float32 model, trl_decpo.testing.tiny_tokenizer()

Every model takes ``forward(input_ids=..., attention_mask=...)`` (text only, also for the vision-language families)
and returns ``logits`` of shape ``[batch, seq, VOCAB_SIZE]``. Sizes are tiny (hidden 32, 2 layers, or 4 where the
layer structure varies along the stack: hybrid and first-dense MoE stacks), dropouts are 0, so one forward + backward
on 8 x 16 tokens takes a few to a few tens of milliseconds on CPU.

Vision-language families (``VLM_FAMILIES``) are built with the class that TRL's ``DPOTrainer`` loads for them (the
``architectures[0]`` of their config, a ``*ForConditionalGeneration``); their vision towers are tiny too, and their
image / video / boundary token ids keep transformers' defaults, which lie outside the tiny vocabulary, so that no
text token is ever taken for an image placeholder.

Families left out: none. Notes on the ones that needed care on CPU:

* ``jamba`` and ``nemotron_h`` (Mamba / Mamba-2 mixers): without the ``mamba-ssm`` / ``causal-conv1d`` packages (absent
  here) transformers 5.23 picks its pure-PyTorch implementation automatically; ``use_mamba_kernels=False`` is passed
  anyway for versions that still read it (5.23 ignores it and logs a deprecation warning).
* ``lfm2`` (short-convolution mixers): without ``causal-conv1d`` it uses its slow PyTorch path.
* MoE families (``mixtral``, ``qwen2_moe``, ``qwen3_moe``, ``olmoe``, ``gpt_oss``, ``glm4_moe``, ``deepseek_v3``, and
  the MoE layers of ``jamba`` and ``nemotron_h``): in transformers 5 the experts are one module holding fused 3-D
  parameters (``gate_up_proj`` [E, 2 * I, d] or [E, d, 2 * I], ``down_proj``), not an ``nn.ModuleList`` of per-expert
  MLPs; there is no per-expert ``nn.Linear`` to hook.
"""

from __future__ import annotations

from collections.abc import Callable

from trl_decpo.testing import VOCAB_SIZE, tiny_tokenizer


HIDDEN = 32
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 64
MOE_INTERMEDIATE = 24  # not hidden / 2, so that fused expert shapes [E, 2 * I, d] and [E, d, 2 * I] differ
EXPERTS = 4
TOP_K = 2
LAYERS = 2
LAYERS_VARYING = 4  # stacks whose layers differ (hybrid mixers, dense-then-MoE)
SLIDING_WINDOW = 8  # shorter than test sequences, so that the sliding layers really slide
MAX_POSITIONS = 128

# The token ids of trl_decpo.testing.tiny_tokenizer(): <pad> = 0, <eos> = 1, and <eos> doubles as <bos>
TOKENS = dict(vocab_size=VOCAB_SIZE, pad_token_id=0, eos_token_id=1, bos_token_id=1)


def _llama_like(**extra):
    """Sizes shared by the Llama-style configs (keys ``hidden_size``, ``num_hidden_layers``, ...)."""
    return (
        dict(
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=MAX_POSITIONS,
            **TOKENS,
        )
        | extra
    )


def _alternating(n: int = LAYERS, pattern=("sliding_attention", "full_attention")) -> list[str]:
    return [pattern[i % len(pattern)] for i in range(n)]


# ------------------------------------------------------------------------------------------------------------------
# Dense decoder-only families
# ------------------------------------------------------------------------------------------------------------------


def _llama():
    from transformers import LlamaConfig

    return LlamaConfig(**_llama_like())


def _qwen2():
    from transformers import Qwen2Config

    return Qwen2Config(**_llama_like())


def _qwen3():
    from transformers import Qwen3Config

    return Qwen3Config(**_llama_like(head_dim=HEAD_DIM))  # the default head_dim is 128, not hidden / heads


def _mistral():
    from transformers import MistralConfig

    return MistralConfig(**_llama_like(head_dim=HEAD_DIM))


def _gemma2():
    from transformers import Gemma2Config

    return Gemma2Config(
        **_llama_like(
            head_dim=HEAD_DIM,
            query_pre_attn_scalar=HEAD_DIM,
            sliding_window=SLIDING_WINDOW,
            layer_types=_alternating(),
        )
    )


def _gemma3_text(**extra):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        **_llama_like(
            head_dim=HEAD_DIM,
            query_pre_attn_scalar=HEAD_DIM,
            sliding_window=SLIDING_WINDOW,
            layer_types=_alternating(),
            **extra,
        )
    )


def _cohere2():
    from transformers import Cohere2Config

    return Cohere2Config(**_llama_like(head_dim=HEAD_DIM, sliding_window=SLIDING_WINDOW, layer_types=_alternating()))


def _olmo3():
    from transformers import Olmo3Config

    return Olmo3Config(**_llama_like(sliding_window=SLIDING_WINDOW, layer_types=_alternating()))


def _gpt2():
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=INTERMEDIATE,
        n_positions=MAX_POSITIONS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **TOKENS,
    )


def _gpt_neox():
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **TOKENS,
    )


def _gptj():
    from transformers import GPTJConfig

    return GPTJConfig(
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=INTERMEDIATE,
        n_positions=MAX_POSITIONS,
        rotary_dim=HEAD_DIM // 2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **TOKENS,
    )


def _falcon():
    from transformers import FalconConfig

    # Falcon-7B layout: parallel attention and MLP, multi-query attention
    return FalconConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        ffn_hidden_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        **TOKENS,
    )


def _starcoder2():
    from transformers import Starcoder2Config

    return Starcoder2Config(**_llama_like(residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0))


def _opt():
    from transformers import OPTConfig

    return OPTConfig(
        hidden_size=HIDDEN,
        ffn_dim=INTERMEDIATE,
        word_embed_proj_dim=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        dropout=0.0,
        **TOKENS,
    )


def _phi3():
    from transformers import Phi3Config

    return Phi3Config(**_llama_like(original_max_position_embeddings=MAX_POSITIONS))


def _bloom():
    from transformers import BloomConfig

    return BloomConfig(hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS, **TOKENS)  # MLP width is 4 * hidden


# ------------------------------------------------------------------------------------------------------------------
# Hybrid stacks (layers of different kinds)
# ------------------------------------------------------------------------------------------------------------------


def _lfm2():
    from transformers import Lfm2Config

    # Short-convolution and attention mixers; every layer has a SwiGLU feed-forward
    return Lfm2Config(
        **_llama_like(
            num_hidden_layers=LAYERS_VARYING,
            layer_types=["conv", "conv", "full_attention", "conv"],
            block_auto_adjust_ff_dim=False,
        )
    )


def _nemotron_h():
    from transformers import NemotronHConfig

    # One mixer per layer: Mamba-2, MoE (routed + shared experts), attention, MLP; the layer count comes from the list
    return NemotronHConfig(
        hidden_size=HIDDEN,
        layers_block_type=["linear_attention", "moe", "full_attention", "mlp"],
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        use_mamba_kernels=False,
        ssm_state_size=8,
        mamba_num_heads=HEADS,
        mamba_head_dim=HEAD_DIM,
        n_groups=1,
        chunk_size=8,
        n_routed_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        n_shared_experts=1,
        moe_intermediate_size=MOE_INTERMEDIATE,
        moe_shared_expert_intermediate_size=MOE_INTERMEDIATE,
        num_nextn_predict_layers=0,
        **TOKENS,
    )


def _jamba():
    from transformers import JambaConfig

    # Layers: 0 Mamba + MLP, 1 Mamba + MoE, 2 attention + MLP, 3 Mamba + MoE (the Jamba pattern, shortened)
    return JambaConfig(
        **_llama_like(
            num_hidden_layers=LAYERS_VARYING,
            attn_layer_period=4,
            attn_layer_offset=2,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=EXPERTS,
            num_experts_per_tok=TOP_K,
            use_mamba_kernels=False,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=2,
            mamba_dt_rank=4,
        )
    )


# ------------------------------------------------------------------------------------------------------------------
# Mixture-of-experts families
# ------------------------------------------------------------------------------------------------------------------


def _mixtral():
    from transformers import MixtralConfig

    return MixtralConfig(
        **_llama_like(head_dim=HEAD_DIM, intermediate_size=MOE_INTERMEDIATE),
        num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def _qwen2_moe():
    from transformers import Qwen2MoeConfig

    return Qwen2MoeConfig(
        **_llama_like(),
        moe_intermediate_size=MOE_INTERMEDIATE,
        shared_expert_intermediate_size=2 * MOE_INTERMEDIATE,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def _qwen3_moe():
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        **_llama_like(head_dim=HEAD_DIM),
        moe_intermediate_size=MOE_INTERMEDIATE,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def _olmoe():
    from transformers import OlmoeConfig

    return OlmoeConfig(
        **_llama_like(intermediate_size=MOE_INTERMEDIATE),
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def _gpt_oss():
    from transformers import GptOssConfig

    return GptOssConfig(
        **_llama_like(
            head_dim=HEAD_DIM,
            intermediate_size=MOE_INTERMEDIATE,
            sliding_window=SLIDING_WINDOW,
            layer_types=_alternating(),
            rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
        ),
        num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def _glm4_moe():
    from transformers import Glm4MoeConfig

    # Layer 0 is a dense MLP, layers 1-3 are MoE with a shared expert
    return Glm4MoeConfig(
        **_llama_like(num_hidden_layers=LAYERS_VARYING),
        moe_intermediate_size=MOE_INTERMEDIATE,
        n_routed_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=1,
        num_nextn_predict_layers=0,
    )


def _deepseek_v3():
    from transformers import DeepseekV3Config

    # Multi-head latent attention; layer 0 is a dense MLP, layers 1-3 are MoE with a shared expert
    return DeepseekV3Config(
        **_llama_like(num_hidden_layers=LAYERS_VARYING, num_key_value_heads=HEADS),
        moe_intermediate_size=MOE_INTERMEDIATE,
        n_routed_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=1,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=HEAD_DIM,
        num_nextn_predict_layers=0,
    )


# ------------------------------------------------------------------------------------------------------------------
# Vision-language families (text-only inputs work; the vision towers are tiny)
# ------------------------------------------------------------------------------------------------------------------


def _llama_text_config():
    return dict(model_type="llama", **_llama_like())


def _gemma3_vlm():
    from transformers import Gemma3Config

    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        image_size=64,
        patch_size=16,
    )
    # 4 x 4 patches pooled to 2 x 2 image tokens
    return Gemma3Config(text_config=_gemma3_text().to_dict(), vision_config=vision, mm_tokens_per_image=4)


def _qwen2_vl():
    from transformers import Qwen2VLConfig

    # 3-D rotary embedding: the sections (temporal, height, width) add up to head_dim / 2
    text = _llama_like(rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]})
    vision = dict(depth=1, embed_dim=HIDDEN, hidden_size=HIDDEN, num_heads=HEADS, mlp_ratio=2)
    return Qwen2VLConfig(text_config=text, vision_config=vision)


def _qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig

    text = _llama_like(rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]})
    vision = dict(
        depth=2,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_heads=HEADS,
        out_hidden_size=HIDDEN,
        fullatt_block_indexes=[1],
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision)


def _llava():
    from transformers import LlavaConfig

    vision = dict(
        model_type="clip_vision_model",
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        projection_dim=HIDDEN,
        num_hidden_layers=2,  # features come from layer -2
        num_attention_heads=HEADS,
        image_size=28,
        patch_size=14,
    )
    return LlavaConfig(text_config=_llama_text_config(), vision_config=vision, image_seq_length=4)


def _idefics3_like(config_class):
    vision = dict(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        image_size=64,
        patch_size=16,
    )
    # 4 x 4 patches, pixel-shuffled by scale_factor 2 into 4 image tokens
    return config_class(text_config=_llama_text_config(), vision_config=vision, scale_factor=2, pad_token_id=0)


def _idefics3():
    from transformers import Idefics3Config

    return _idefics3_like(Idefics3Config)


def _smolvlm():
    from transformers import SmolVLMConfig

    return _idefics3_like(SmolVLMConfig)


def _mpt():
    from transformers import MptConfig

    # `transformer.blocks[i].ffn.{up_proj, act, down_proj}`: the MLP is called `ffn`
    return MptConfig(
        d_model=HIDDEN, n_heads=HEADS, n_layers=LAYERS, expansion_ratio=2, max_seq_len=MAX_POSITIONS, **TOKENS
    )


def _recurrent_gemma():
    from transformers import RecurrentGemmaConfig

    # recurrent (RG-LRU) and attention blocks, each with an MLP called `mlp_block`
    return RecurrentGemmaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        lru_width=HIDDEN,
        attention_window_size=SLIDING_WINDOW,
        block_types=["recurrent", "recurrent", "attention"],
        **TOKENS,
    )


def _dbrx():
    from transformers import DbrxConfig

    # `transformer.blocks[i].ffn` holds fused `experts` (no shared expert)
    config = DbrxConfig(
        d_model=HIDDEN,
        n_heads=HEADS,
        n_layers=LAYERS,
        max_seq_len=MAX_POSITIONS,
        ffn_config={"ffn_hidden_size": MOE_INTERMEDIATE, "moe_num_experts": EXPERTS, "moe_top_k": TOP_K},
        attn_config={"kv_n_heads": KV_HEADS, "rope_theta": 10000.0, "clip_qkv": 8.0},
        **TOKENS,
    )
    config.rope_theta = 10000.0  # read from the top-level config by transformers 5.23's attention
    return config


# family -> (config builder, model class name in transformers)
_SPECS: dict[str, tuple[Callable, str]] = {
    "llama": (_llama, "LlamaForCausalLM"),
    "qwen2": (_qwen2, "Qwen2ForCausalLM"),
    "qwen3": (_qwen3, "Qwen3ForCausalLM"),
    "mistral": (_mistral, "MistralForCausalLM"),
    "gemma2": (_gemma2, "Gemma2ForCausalLM"),
    "gemma3": (_gemma3_text, "Gemma3ForCausalLM"),
    "cohere2": (_cohere2, "Cohere2ForCausalLM"),
    "olmo3": (_olmo3, "Olmo3ForCausalLM"),
    "gpt2": (_gpt2, "GPT2LMHeadModel"),
    "gpt_neox": (_gpt_neox, "GPTNeoXForCausalLM"),
    "gptj": (_gptj, "GPTJForCausalLM"),
    "falcon": (_falcon, "FalconForCausalLM"),
    "starcoder2": (_starcoder2, "Starcoder2ForCausalLM"),
    "opt": (_opt, "OPTForCausalLM"),
    "phi3": (_phi3, "Phi3ForCausalLM"),
    "bloom": (_bloom, "BloomForCausalLM"),
    "mpt": (_mpt, "MptForCausalLM"),
    "recurrent_gemma": (_recurrent_gemma, "RecurrentGemmaForCausalLM"),
    "lfm2": (_lfm2, "Lfm2ForCausalLM"),
    "nemotron_h": (_nemotron_h, "NemotronHForCausalLM"),
    "jamba": (_jamba, "JambaForCausalLM"),
    "mixtral": (_mixtral, "MixtralForCausalLM"),
    "qwen2_moe": (_qwen2_moe, "Qwen2MoeForCausalLM"),
    "qwen3_moe": (_qwen3_moe, "Qwen3MoeForCausalLM"),
    "olmoe": (_olmoe, "OlmoeForCausalLM"),
    "gpt_oss": (_gpt_oss, "GptOssForCausalLM"),
    "glm4_moe": (_glm4_moe, "Glm4MoeForCausalLM"),
    "deepseek_v3": (_deepseek_v3, "DeepseekV3ForCausalLM"),
    "dbrx": (_dbrx, "DbrxForCausalLM"),
    "gemma3_vlm": (_gemma3_vlm, "Gemma3ForConditionalGeneration"),
    "qwen2_vl": (_qwen2_vl, "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": (_qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration"),
    "llava": (_llava, "LlavaForConditionalGeneration"),
    "idefics3": (_idefics3, "Idefics3ForConditionalGeneration"),
    "smolvlm": (_smolvlm, "SmolVLMForConditionalGeneration"),
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
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "gpt_oss",
    "glm4_moe",
    "deepseek_v3",
    "jamba",
    "nemotron_h",
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


def tiny_family_config(family: str):
    """A fresh config of the tiny model of ``family`` (one of :data:`FAMILIES`)."""
    if family not in _SPECS:
        raise ValueError(f"Unknown family {family!r}; expected one of {FAMILIES}")
    return _SPECS[family][0]()


def tiny_family_model(family: str, seed: int = 0):
    """A tiny random float32 model of ``family`` (one of :data:`FAMILIES`), initialised from ``seed``, in train mode
    as ``from_config`` leaves it, and :func:`trl_decpo.testing.tiny_tokenizer`: ``(model, tokenizer)``."""
    import torch
    import transformers

    config = tiny_family_config(family)
    model_class = getattr(transformers, MODEL_CLASSES[family])
    torch.manual_seed(seed)
    model = model_class._from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = TOKENS["pad_token_id"]
    model.generation_config.eos_token_id = TOKENS["eos_token_id"]
    model.generation_config.bos_token_id = TOKENS["bos_token_id"]
    return model, tiny_tokenizer()


def decoder_layers(model, family: str):
    """The ``nn.ModuleList`` of decoder layers of a model built by :func:`tiny_family_model`."""
    return model.get_submodule(LAYER_LISTS[family])
