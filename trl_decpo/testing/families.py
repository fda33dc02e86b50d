# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The config of each model family's tiny model, built from transformers' config classes (no Hub access).

Sizes are tiny (hidden 32, 2 layers, or 4 where the layer structure varies along the stack: hybrid and first-dense MoE
stacks), dropouts are 0. The builders of the families :func:`trl_decpo.testing.tiny_config` also builds (Llama,
Mistral, Qwen2, GPT-2, GPT-NeoX: :data:`SIZED`) take the sizes as arguments; every other builder takes none.

Vision-language families are built with the class that TRL's ``DPOTrainer`` loads for them (the ``architectures[0]``
of their config, a ``*ForConditionalGeneration``); their vision towers are tiny too, and their image / video /
boundary token ids keep transformers' defaults, which lie outside the tiny vocabulary, so that no text token is ever
taken for an image placeholder.

Notes on the families that needed care on CPU:

* ``jamba`` and ``nemotron_h`` (Mamba / Mamba-2 mixers): without the ``mamba-ssm`` / ``causal-conv1d`` packages
  transformers 5.23 picks its pure-PyTorch implementation automatically; ``use_mamba_kernels=False`` is passed anyway
  for versions that still read it (5.23 ignores it and logs a deprecation warning).
* ``lfm2`` (short-convolution mixers): without ``causal-conv1d`` it uses its slow PyTorch path.
* MoE families (``mixtral``, ``qwen2_moe``, ``qwen3_moe``, ``olmoe``, ``gpt_oss``, ``glm4_moe``, ``deepseek_v3``,
  ``dbrx``, and the MoE layers of ``jamba`` and ``nemotron_h``): in transformers 5 the experts are one module holding
  fused 3-D parameters (``gate_up_proj`` [E, 2 * I, d] or [E, d, 2 * I], ``down_proj``), not an ``nn.ModuleList`` of
  per-expert MLPs; there is no per-expert ``nn.Linear`` to hook.
"""

from __future__ import annotations

from collections.abc import Callable

from .data import TOKENS


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


def _config(class_name: str, **kwargs):
    """``transformers.<class_name>(**kwargs)``, the class imported only now (importing this module stays cheap)."""
    import transformers

    return getattr(transformers, class_name)(**kwargs)


def _llama_like(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS, **extra) -> dict:
    """Sizes shared by the Llama-style configs (keys ``hidden_size``, ``num_hidden_layers``, ...); ``extra`` wins."""
    return (
        dict(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
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
# The sized families (also tiny_config's architectures)
# ------------------------------------------------------------------------------------------------------------------


def llama(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS):
    return _config("LlamaConfig", **_llama_like(hidden, intermediate, layers))


def qwen2(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS):
    return _config("Qwen2Config", **_llama_like(hidden, intermediate, layers))


def mistral(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS):
    return _config("MistralConfig", **_llama_like(hidden, intermediate, layers, head_dim=hidden // HEADS))


def gpt2(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS, dropout: float = 0.0):
    return _config(
        "GPT2Config",
        n_embd=hidden,
        n_layer=layers,
        n_head=HEADS,
        n_inner=intermediate,
        n_positions=MAX_POSITIONS,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        **TOKENS,
    )


def gpt_neox(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS):
    return _config(
        "GPTNeoXConfig",
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **TOKENS,
    )


SIZED: dict[str, Callable] = {"llama": llama, "mistral": mistral, "qwen2": qwen2, "gpt2": gpt2, "gpt_neox": gpt_neox}
"""The builders that take ``(hidden, intermediate, layers)``."""


# ------------------------------------------------------------------------------------------------------------------
# Other dense decoder-only families
# ------------------------------------------------------------------------------------------------------------------


def qwen3():
    return _config("Qwen3Config", **_llama_like(head_dim=HEAD_DIM))  # the default head_dim is 128, not hidden / heads


def gemma2():
    kwargs = _llama_like(
        head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=SLIDING_WINDOW, layer_types=_alternating()
    )
    return _config("Gemma2Config", **kwargs)


def gemma3():
    kwargs = _llama_like(
        head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=SLIDING_WINDOW, layer_types=_alternating()
    )
    return _config("Gemma3TextConfig", **kwargs)


def cohere2():
    kwargs = _llama_like(head_dim=HEAD_DIM, sliding_window=SLIDING_WINDOW, layer_types=_alternating())
    return _config("Cohere2Config", **kwargs)


def olmo3():
    return _config("Olmo3Config", **_llama_like(sliding_window=SLIDING_WINDOW, layer_types=_alternating()))


def gptj():
    return _config(
        "GPTJConfig",
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


def falcon():
    # Falcon-7B layout: parallel attention and MLP, multi-query attention
    return _config(
        "FalconConfig",
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        ffn_hidden_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        **TOKENS,
    )


def starcoder2():
    kwargs = _llama_like(residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0)
    return _config("Starcoder2Config", **kwargs)


def opt():
    return _config(
        "OPTConfig",
        hidden_size=HIDDEN,
        ffn_dim=INTERMEDIATE,
        word_embed_proj_dim=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        dropout=0.0,
        **TOKENS,
    )


def phi3():
    return _config("Phi3Config", **_llama_like(original_max_position_embeddings=MAX_POSITIONS))


def bloom():
    return _config("BloomConfig", hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS, **TOKENS)  # MLP width 4 * hidden


def mpt():
    # `transformer.blocks[i].ffn.{up_proj, act, down_proj}`: the MLP is called `ffn`
    return _config(
        "MptConfig",
        d_model=HIDDEN,
        n_heads=HEADS,
        n_layers=LAYERS,
        expansion_ratio=2,
        max_seq_len=MAX_POSITIONS,
        **TOKENS,
    )


# ------------------------------------------------------------------------------------------------------------------
# Hybrid stacks (layers of different kinds)
# ------------------------------------------------------------------------------------------------------------------


def recurrent_gemma():
    # recurrent (RG-LRU) and attention blocks, each with an MLP called `mlp_block`
    return _config(
        "RecurrentGemmaConfig",
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


def lfm2():
    # Short-convolution and attention mixers; every layer has a SwiGLU feed-forward
    kwargs = _llama_like(
        num_hidden_layers=LAYERS_VARYING,
        layer_types=["conv", "conv", "full_attention", "conv"],
        block_auto_adjust_ff_dim=False,
    )
    return _config("Lfm2Config", **kwargs)


def nemotron_h():
    # One mixer per layer: Mamba-2, MoE (routed + shared experts), attention, MLP; the layer count comes from the list
    return _config(
        "NemotronHConfig",
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


def jamba():
    # Layers: 0 Mamba + MLP, 1 Mamba + MoE, 2 attention + MLP, 3 Mamba + MoE (the Jamba pattern, shortened)
    kwargs = _llama_like(
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
    return _config("JambaConfig", **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Mixture-of-experts families
# ------------------------------------------------------------------------------------------------------------------


def mixtral():
    kwargs = _llama_like(head_dim=HEAD_DIM, intermediate_size=MOE_INTERMEDIATE)
    return _config("MixtralConfig", **kwargs, num_local_experts=EXPERTS, num_experts_per_tok=TOP_K)


def qwen2_moe():
    return _config(
        "Qwen2MoeConfig",
        **_llama_like(),
        moe_intermediate_size=MOE_INTERMEDIATE,
        shared_expert_intermediate_size=2 * MOE_INTERMEDIATE,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def qwen3_moe():
    kwargs = _llama_like(head_dim=HEAD_DIM)
    return _config(
        "Qwen3MoeConfig",
        **kwargs,
        moe_intermediate_size=MOE_INTERMEDIATE,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def olmoe():
    kwargs = _llama_like(intermediate_size=MOE_INTERMEDIATE)
    return _config("OlmoeConfig", **kwargs, num_experts=EXPERTS, num_experts_per_tok=TOP_K)


def gpt_oss():
    kwargs = _llama_like(
        head_dim=HEAD_DIM,
        intermediate_size=MOE_INTERMEDIATE,
        sliding_window=SLIDING_WINDOW,
        layer_types=_alternating(),
        rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
    )
    return _config("GptOssConfig", **kwargs, num_local_experts=EXPERTS, num_experts_per_tok=TOP_K)


def glm4_moe():
    # Layer 0 is a dense MLP, layers 1-3 are MoE with a shared expert
    return _config(
        "Glm4MoeConfig",
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


def deepseek_v3():
    # Multi-head latent attention; layer 0 is a dense MLP, layers 1-3 are MoE with a shared expert
    return _config(
        "DeepseekV3Config",
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


def dbrx():
    # `transformer.blocks[i].ffn` holds fused `experts` (no shared expert)
    config = _config(
        "DbrxConfig",
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


# ------------------------------------------------------------------------------------------------------------------
# Vision-language families (text-only inputs work; the vision towers are tiny)
# ------------------------------------------------------------------------------------------------------------------


def gemma3_vlm():
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
    return _config("Gemma3Config", text_config=gemma3().to_dict(), vision_config=vision, mm_tokens_per_image=4)


def _mrope_text() -> dict:
    # 3-D rotary embedding: the sections (temporal, height, width) add up to head_dim / 2
    return _llama_like(rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]})


def qwen2_vl():
    vision = dict(depth=1, embed_dim=HIDDEN, hidden_size=HIDDEN, num_heads=HEADS, mlp_ratio=2)
    return _config("Qwen2VLConfig", text_config=_mrope_text(), vision_config=vision)


def qwen2_5_vl():
    vision = dict(
        depth=2,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_heads=HEADS,
        out_hidden_size=HIDDEN,
        fullatt_block_indexes=[1],
    )
    return _config("Qwen2_5_VLConfig", text_config=_mrope_text(), vision_config=vision)


def llava():
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
    text = dict(model_type="llama", **_llama_like())
    return _config("LlavaConfig", text_config=text, vision_config=vision, image_seq_length=4)


def _idefics3_like(class_name: str):
    vision = dict(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        image_size=64,
        patch_size=16,
    )
    # 4 x 4 patches, pixel-shuffled by scale_factor 2 into 4 image tokens
    text = dict(model_type="llama", **_llama_like())
    return _config(class_name, text_config=text, vision_config=vision, scale_factor=2, pad_token_id=0)


def idefics3():
    return _idefics3_like("Idefics3Config")


def smolvlm():
    return _idefics3_like("SmolVLMConfig")
