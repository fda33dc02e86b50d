# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Neuron-level views that read MLP weights: the weight proxy (Gurnee et al. 2023) and top tokens (paper Table 1).

A neuron ``j`` of a decoder layer's MLP has input weights (row ``j`` of each input projection: ``gate_proj`` and
``up_proj`` for gated MLPs, ``c_fc`` for GPT-2) and an output direction (column ``j`` of the output projection,
``down_proj`` / ``c_proj``). Weights are read as the model computes with them: GPT-2's ``Conv1D`` transposed to the
``nn.Linear`` layout, bitsandbytes 4-bit weights dequantised, and PEFT LoRA deltas of the active adapters added.
Layer modules are found by :func:`trl_decpo.capture.resolve_sites`, the resolver the hooks use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .capture import Site, _site_groups, resolve_sites, unwrap_model
from .measure import measure_monosemanticity
from .proxies import median, neuron_weight_scores, weight_proxy_change, weight_proxy_values


# (input projections, output projection) inside a decoder layer, tried in order.
MLP_LAYOUTS = (
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # Llama, Mistral, Qwen2, Gemma, SmolLM2
    (("mlp.c_fc",), "mlp.c_proj"),  # GPT-2
    (("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),  # GPT-NeoX, Falcon
    (("mlp.fc1",), "mlp.fc2"),  # Phi
    (("fc1",), "fc2"),  # OPT
)
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


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
    for in_paths, out_path in MLP_LAYOUTS:
        present = [p for p in in_paths if _site_groups(bare, Site(p))]
        if not present or not _site_groups(bare, Site(out_path)):
            continue
        out_sites = resolve_sites(bare, list(layers) if layers is not None else _all_layers(bare, out_path), out_path,
                                  fields=(field, "mlp output projection"))
        in_sites = [resolve_sites(bare, [s.layer for s in out_sites], p, fields=(field, "mlp input projection"))
                    for p in present]
        return [
            MLPLayer(layer=o.layer, inputs=[group[i].module for group in in_sites],
                     input_names=[group[i].name for group in in_sites], output=o.module, output_name=o.name)
            for i, o in enumerate(out_sites)
        ]
    known = ", ".join(f"{'+'.join(i)} -> {o}" for i, o in MLP_LAYOUTS)
    raise ValueError(f"{type(bare).__name__} has no MLP layout trl-decpo knows ({known}); neuron weights cannot be read")


def _all_layers(model: nn.Module, path: str) -> list[int]:
    ((_, found),) = _site_groups(model, Site(path)).items()
    return sorted(found)


def linear_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight [out, in], bias)`` in float32 of the affine map the module computes.

    Read directly: ``nn.Linear``, GPT-2's ``Conv1D`` (transposed), bitsandbytes 4-bit (dequantised), and PEFT LoRA
    layers with plain LoRA adapters (base + ``get_delta_weight``). Anything else (DoRA and other LoRA variants, LoRA
    with ``lora_bias``, LoHa, LoKr, ``modules_to_save`` copies, unknown wrappers) is probed: ``bias = f(0)`` and
    ``weight = f(I) - f(0)``, in eval mode without gradients, in the module's dtype (exact in float32; in half
    precision the weights carry that precision's rounding).
    """
    if _is_plain_lora(module):
        weight, bias = linear_weight(module.base_layer)
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
        import bitsandbytes.functional as bnbf  # bitsandbytes Linear4bit

        weight = bnbf.dequantize_4bit(raw.data, raw.quant_state).float()
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
    if not (type(module.base_layer) is nn.Linear or _is_conv1d(module.base_layer)
            or getattr(getattr(module.base_layer, "weight", None), "quant_state", None) is not None):
        return False
    for name in module.active_adapters:
        if name in getattr(module, "lora_variant", {}) or getattr(module, "lora_bias", {}).get(name, False):
            return False
    return not any(k in getattr(module, "lora_magnitude_vector", {}) for k in module.active_adapters)


def _probe_affine(module: nn.Module, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    in_features = next((m.in_features for m in module.modules() if isinstance(getattr(m, "in_features", None), int)),
                       None)
    if in_features is None:
        in_features = next((m.weight.shape[0] for m in module.modules() if _is_conv1d(m)), None)
    if in_features is None:
        raise ValueError(f"cannot tell the input width of {type(module).__name__}; its weights cannot be read")
    dtype = next((m.compute_dtype for m in module.modules() if isinstance(getattr(m, "compute_dtype", None),
                                                                          torch.dtype)), None)
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
    return type(module).__name__ == "Conv1D"


# ----------------------------------------------------------------------------------------------------------------------
# Weight proxy
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class WeightProxyReport:
    layers: list[int]
    medians: dict[int, float]  # median_j(||w_in_j|| * b_in_j)
    values: dict[int, float]  # medians / max |median| over the layers
    change: dict[int, float] | None  # (tuned - base) / |base| on the top_k most changed neurons, when a base is given
    top_k: int

    def to_dict(self) -> dict:
        return {"top_k": self.top_k, "layers": [
            {"layer": layer, "median": self.medians[layer], "value": self.values[layer],
             "relative_change": None if self.change is None else self.change[layer]} for layer in self.layers]}


def _proxy_inputs(model: nn.Module, layers) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    out = []
    for mlp in mlp_layers(model, layers):
        weight, bias = linear_weight(mlp.inputs[-1])
        if bias is None:
            raise ValueError(
                f"the weight proxy needs an MLP input projection with a bias (GPT-2 family: `mlp.c_fc`); "
                f"`{mlp.input_names[-1]}` of {type(unwrap_model(model)).__name__} has none (Llama-family MLPs have no "
                "input bias). Use feature decorrelation (`measure`) for this model."
            )
        out.append((mlp.layer, weight, bias))
    return out


def weight_proxy(
    model: nn.Module, base_model: nn.Module | None = None, layers: Sequence[int] | None = None, top_k: int = 100
) -> WeightProxyReport:
    """The weight proxy per layer; with ``base_model``, also the relative change of ``model`` against it.

    ``values[l] = median_j(||w_in_j|| * b_in_j) / max_l' median_j(|...|)`` (the scale over all layers of the model,
    whichever ``layers`` are reported) and ``change[l] = (tuned - base) / |base|`` of that median over the ``top_k``
    neurons whose input weights changed most.

    Raises:
        ValueError: for MLPs without an input bias (Llama), or base and tuned models of different shapes.
    """
    everything = _proxy_inputs(model, None)
    by_layer = {layer: (w, b) for layer, w, b in everything}
    reported = [m.layer for m in mlp_layers(model, layers)] if layers is not None else sorted(by_layer)
    all_values = dict(zip(by_layer, weight_proxy_values([neuron_weight_scores(w, b) for w, b in by_layer.values()])))
    medians = {layer: median(neuron_weight_scores(*by_layer[layer])) for layer in reported}
    values = {layer: all_values[layer] for layer in reported}
    change = None
    if base_model is not None:
        base = {layer: (w, b) for layer, w, b in _proxy_inputs(base_model, reported)}
        change = {layer: weight_proxy_change(*base[layer], *by_layer[layer], top_k=top_k) for layer in reported}
    return WeightProxyReport(layers=reported, medians=medians, values=values, change=change, top_k=top_k)


# ----------------------------------------------------------------------------------------------------------------------
# Top tokens
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class NeuronTokens:
    """One predominant hidden dimension and the vocabulary tokens its output direction promotes most."""

    dimension: int
    score: float  # mean |activation| on the probes, or the norm of its input-weight change
    token_ids: list[int]
    tokens: list[str]
    logits: list[float]


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied after the last decoder layer (``model.norm``, ``transformer.ln_f``, ...)."""
    bare = unwrap_model(model)
    found = [(name, m) for name, m in bare.named_modules()
             if name.split(".")[-1] in FINAL_NORM_NAMES and not re.search(r"(^|\.)\d+(\.|$)", name)]
    if len(found) != 1:
        names = [n for n, _ in found]
        raise ValueError(f"cannot identify the final norm of {type(bare).__name__} (candidates: {names}; looked for "
                         f"modules named {list(FINAL_NORM_NAMES)} outside the decoder layers)")
    return found[0][1]


def output_direction_logits(model: nn.Module, directions: torch.Tensor) -> torch.Tensor:
    """``unembedding(final_norm(v))`` for each row ``v`` of ``directions`` ([k, d_model]) -> [k, vocab].

    The final norm's additive bias (LayerNorm's beta) is left out: it would add the same logits to every direction."""
    norm = final_norm(model)
    param = next(norm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else directions.device
    with torch.no_grad():
        normed = norm(directions.to(device=device, dtype=dtype)).float()
        norm_bias = getattr(norm, "bias", None)
        if isinstance(norm_bias, torch.Tensor):  # LayerNorm's beta adds the same logits to every direction: leave out
            normed = normed - norm_bias.detach().float()
        unembed, unembed_bias = linear_weight(unwrap_model(model).get_output_embeddings())
        logits = normed.to(unembed.device) @ unembed.T
        if unembed_bias is not None:
            logits = logits + unembed_bias
    return logits


def top_tokens(
    model: nn.Module,
    tokenizer,
    layer: int,
    k: int = 10,
    num_tokens: int = 10,
    prompts: Sequence | None = None,
    base_model: nn.Module | None = None,
    site: str | None = None,
    batch_size: int = 8,
    max_length: int | None = 512,
) -> list[NeuronTokens]:
    """The paper's Table 1: the ``k`` most predominant hidden dimensions of ``layer`` and their top tokens.

    Dimensions are ranked by mean ``|activation|`` at the site over ``prompts`` (last real token of each), or, with
    ``base_model``, by how much their input weights changed (``||w_j - w_base_j||`` over all input projections).
    Each dimension's output direction (column ``j`` of the output projection) goes through the final norm and the
    unembedding; its ``num_tokens`` highest logits are returned.
    """
    for name, value in (("k", k), ("num_tokens", num_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    if (prompts is None) == (base_model is None):
        raise ValueError("`top_tokens` ranks dimensions either by activation on `prompts` or by weight change against "
                         "`base_model`: give exactly one of them")
    (mlp,) = mlp_layers(model, [layer], field="layer")
    out_weight, _ = linear_weight(mlp.output)  # [d_model, d_ff]
    width = out_weight.shape[1]
    if base_model is not None:
        (base_mlp,) = mlp_layers(base_model, [mlp.layer])
        change = torch.zeros(width, dtype=torch.float64)
        for tuned_module, base_module in zip(mlp.inputs, base_mlp.inputs):
            tuned_w, _ = linear_weight(tuned_module)
            base_w, _ = linear_weight(base_module)
            if tuned_w.shape != base_w.shape:
                raise ValueError(f"base and tuned input weights of layer {mlp.layer} differ in shape: "
                                 f"{tuple(base_w.shape)} vs {tuple(tuned_w.shape)}")
            change += (tuned_w.double() - base_w.double().to(tuned_w.device)).pow(2).sum(1).cpu()
        scores = change.sqrt()
    else:
        report = measure_monosemanticity(model, prompts, tokenizer, layers=[mlp.layer], site=site,
                                         batch_size=batch_size, max_length=max_length)
        scores = report.accumulators[mlp.layer].mean_abs_activation().cpu()
        if scores.numel() != width:
            raise ValueError(f"the site {report.site} has {scores.numel()} dimensions but the output projection "
                             f"`{mlp.output_name}` reads {width}; choose a site inside the MLP hidden layer")
    k = min(k, width)
    picked = scores.topk(k)
    directions = out_weight[:, picked.indices.to(out_weight.device)].T  # [k, d_model]
    logits = output_direction_logits(model, directions)
    best = logits.topk(min(num_tokens, logits.shape[1]), dim=1)
    result = []
    for row, (dim, score) in enumerate(zip(picked.indices.tolist(), picked.values.tolist())):
        ids = best.indices[row].tolist()
        tokens = [tokenizer.decode([i]) for i in ids] if tokenizer is not None else [str(i) for i in ids]
        result.append(NeuronTokens(dimension=dim, score=float(score), token_ids=ids, tokens=tokens,
                                   logits=best.values[row].tolist()))
    return result
