# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Reading MLP weights as the model computes with them.

A neuron ``j`` of a decoder layer's MLP has input weights (row ``j`` of each input projection: ``gate_proj`` and
``up_proj`` for gated MLPs, ``c_fc`` for GPT-2) and an output direction (column ``j`` of the output projection,
``down_proj`` / ``c_proj``). Weights are read as the model computes with them: GPT-2's ``Conv1D`` transposed to the
``nn.Linear`` layout, bitsandbytes 4-bit weights dequantised, and PEFT LoRA deltas of the active adapters added.
Sharded parameters are read whole (:func:`full_parameters`): FSDP2's ``DTensor`` shards and DeepSpeed ZeRO-3's
partitions are gathered on every rank for the duration of the read, so every rank must read the same modules in the
same order (as a measurement does). Layer modules are found by :func:`trl_decpo.capture.resolve_sites`, the resolver
the hooks use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..capture import Site, resolve_sites, unwrap_model
from ..capture.sites import decoder_layers, is_moe_block, site_groups
from ..utils import is_int


# (input projections, output projection) inside a decoder layer, tried in order.
MLP_LAYOUTS = (
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # Llama, Mistral, Qwen2, Gemma, SmolLM2
    (("mlp.c_fc",), "mlp.c_proj"),  # GPT-2
    (("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),  # GPT-NeoX, Falcon
    (("mlp.fc1",), "mlp.fc2"),  # Phi
    (("fc1",), "fc2"),  # OPT
    (("mlp.fc_in",), "mlp.fc_out"),  # GPT-J
    (("feed_forward.w1", "feed_forward.w3"), "feed_forward.w2"),  # LFM2
    (("feed_forward.gate_proj", "feed_forward.up_proj"), "feed_forward.down_proj"),  # Jamba's dense layers
    (("mixer.up_proj",), "mixer.down_proj"),  # NemotronH's MLP layers
    (("ffn.up_proj",), "ffn.down_proj"),  # MPT
    (("mlp_block.gate_proj", "mlp_block.up_proj"), "mlp_block.down_proj"),  # RecurrentGemma
    (("mlp.gate_up_proj",), "mlp.down_proj"),  # Phi-3: gate and up fused, rows [gate; up]
)


@dataclass
class MLPLayer:
    layer: int
    inputs: list[nn.Module]  # input projections; the last one is the proxy's (``up_proj``, ``c_fc``)
    input_names: list[str]
    output: nn.Module
    output_name: str


def mlp_layers(model: nn.Module, layers: Sequence[int] | None = None, field: str = "layers") -> list[MLPLayer]:
    """The MLP projections of each requested decoder layer (``None``: all); ``field`` names the option in errors."""
    bare = unwrap_model(model)
    stack = decoder_layers(bare)[1]
    moe = [index for index, layer in enumerate(stack) if _is_moe_layer(layer)]
    requested = [i + len(stack) if is_int(i) and i < 0 else i for i in (layers or [])]
    if any(index in moe for index in requested) or (moe and layers is None and len(moe) == len(stack)):
        raise ValueError(_fused_experts_error(bare, moe))
    prefix = decoder_layers(bare)[0]

    def in_decoder(path):  # the language model's layers only (a vision tower may have the same MLP layout)
        return site_groups(bare, Site(path)).get(prefix, {})

    for in_paths, out_path in MLP_LAYOUTS:
        present = [p for p in in_paths if in_decoder(p)]
        if not present or not in_decoder(out_path):
            continue
        out_sites = resolve_sites(
            bare,
            list(layers) if layers is not None else sorted(in_decoder(out_path)),
            out_path,
            fields=(field, "mlp output projection"),
        )
        in_sites = [
            resolve_sites(bare, [s.layer for s in out_sites], p, fields=(field, "mlp input projection"))
            for p in present
        ]
        return [
            MLPLayer(
                layer=o.layer,
                inputs=[group[i].module for group in in_sites],
                input_names=[group[i].name for group in in_sites],
                output=o.module,
                output_name=o.name,
            )
            for i, o in enumerate(out_sites)
        ]
    if moe:
        raise ValueError(_fused_experts_error(bare, moe))
    known = ", ".join(f"{'+'.join(i)} -> {o}" for i, o in MLP_LAYOUTS)
    raise ValueError(
        f"{type(bare).__name__} has no MLP layout trl-decpo knows ({known}); neuron weights cannot be read"
    )


def _fused_experts_error(model: nn.Module, moe: list[int]) -> str:
    return (
        f"decoder layers {moe} of {type(model).__name__} are mixture-of-experts blocks: their neurons are spread over "
        "routed experts (fused into 3-D parameters in transformers), not one dense MLP, so the weight proxy and top "
        "tokens cannot be computed there (feature decorrelation and sparsity can: `measure`; or choose a dense layer)"
    )


def _is_moe_layer(layer: nn.Module) -> bool:
    return any(is_moe_block(child) for child in layer.children())


@contextlib.contextmanager
def full_parameters(module: nn.Module):
    """Inside this block the parameters of ``module`` (and its submodules) are whole on this rank, for reading:
    DeepSpeed ZeRO-3 partitions gathered with ``deepspeed.zero.GatheredParameters`` (read-only), FSDP2 ``DTensor``
    shards replaced by their full tensors (``full_tensor()``) and put back on exit. Both gather across ranks: every
    rank must enter the block for the same modules in the same order. Unsharded parameters: nothing happens."""
    params = list(module.parameters())
    if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3 (a partitioned parameter carries its DeepSpeed id)
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
        return
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor: no FSDP2 either
        yield
        return
    swapped = []
    try:
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if isinstance(param, DTensor):
                    sub._parameters[name] = nn.Parameter(param.full_tensor().detach(), requires_grad=False)
                    swapped.append((sub, name, param))
        yield
    finally:
        for sub, name, param in swapped:
            sub._parameters[name] = param


def linear_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight [out, in], bias)`` in float32 of the affine map the module computes (whole, when sharded).

    Read directly: ``nn.Linear``, GPT-2's ``Conv1D`` (transposed), bitsandbytes 4-bit (dequantised), and PEFT LoRA
    layers with plain LoRA adapters (base + ``get_delta_weight``). Anything else (DoRA and other LoRA variants, LoRA
    with ``lora_bias``, LoHa, LoKr, ``modules_to_save`` copies, unknown wrappers) is probed: ``bias = f(0)`` and
    ``weight = f(I) - f(0)``, in eval mode without gradients, in the module's dtype (exact in float32; in half
    precision the weights carry that precision's rounding).
    """
    with full_parameters(module):
        return _linear_weight(module)


def _linear_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    if _is_plain_lora(module):
        weight, bias = _linear_weight(module.base_layer)
        if not getattr(module, "disable_adapters", False) and not getattr(module, "merged", False):
            conv1d = _is_conv1d(module.base_layer)
            for name in module.active_adapters:
                if name in module.lora_A:
                    delta = module.get_delta_weight(name).detach().float()
                    weight = weight + (delta.T if conv1d else delta).to(weight.device)
        return weight, bias
    raw = getattr(module, "weight", None)
    if type(module) is nn.Linear or _is_conv1d(module):
        weight = raw.detach().float()
        weight = weight.T if _is_conv1d(module) else weight
    elif raw is not None and getattr(raw, "quant_state", None) is not None and not _has_adapter(module):
        from peft.utils.integrations import dequantize_module_weight  # bitsandbytes 4-bit / 8-bit

        weight = dequantize_module_weight(module).detach().float()
    else:
        return _probe_affine(module)
    bias = module.bias.detach().float() if getattr(module, "bias", None) is not None else None
    return weight, bias


def _has_adapter(module: nn.Module) -> bool:
    return any(hasattr(m, "base_layer") or hasattr(m, "original_module") for m in module.modules())


def _is_plain_lora(module: nn.Module) -> bool:
    """A PEFT LoRA layer whose active adapters are plain LoRA (no DoRA or other variant, no LoRA bias)."""
    if not (hasattr(module, "base_layer") and hasattr(module, "get_delta_weight") and hasattr(module, "lora_A")):
        return False
    if not (
        type(module.base_layer) is nn.Linear
        or _is_conv1d(module.base_layer)
        or getattr(getattr(module.base_layer, "weight", None), "quant_state", None) is not None
    ):
        return False
    for name in module.active_adapters:
        if name in getattr(module, "lora_variant", {}) or getattr(module, "lora_bias", {}).get(name, False):
            return False
    return not any(k in getattr(module, "lora_magnitude_vector", {}) for k in module.active_adapters)


def _probe_affine(module: nn.Module, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    in_features = next(
        (m.in_features for m in module.modules() if isinstance(getattr(m, "in_features", None), int)), None
    )
    if in_features is None:
        in_features = next((m.weight.shape[0] for m in module.modules() if _is_conv1d(m)), None)
    if in_features is None:
        raise ValueError(f"cannot tell the input width of {type(module).__name__}; its weights cannot be read")
    dtype = next(
        (m.compute_dtype for m in module.modules() if isinstance(getattr(m, "compute_dtype", None), torch.dtype)), None
    )
    params = [p for p in module.parameters() if p.dtype.is_floating_point]
    dtype = dtype or (params[0].dtype if params else torch.float32)
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            zero = module(torch.zeros(1, in_features, dtype=dtype, device=device)).float()
            blocks = []
            for start in range(0, in_features, chunk):
                width = min(chunk, in_features - start)
                eye = torch.zeros(width, in_features, dtype=dtype, device=device)
                eye[:, start : start + width] = torch.eye(width, dtype=dtype, device=device)
                blocks.append(module(eye).float() - zero)
    finally:
        module.train(was_training)
    has_bias = any(isinstance(getattr(m, "bias", None), torch.Tensor) for m in module.modules())
    return torch.cat(blocks).T.contiguous(), (zero[0] if has_bias else None)


def _is_conv1d(module: nn.Module) -> bool:
    return isinstance(module, Conv1D)
