# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Neuron-level views: the weight proxy (Gurnee et al. 2023) and top tokens (the paper's Table 1).

Weights are read by :mod:`.weights` as the model computes with them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..capture import unwrap_model
from ..utils import check_choice, check_int
from .measure import measure_monosemanticity
from .probes import PROBE_POOLING_CHOICES
from .proxies import median, neuron_weight_scores, weight_proxy_change, weight_proxy_values
from .weights import full_parameters, linear_weight, mlp_layers


# `embedding_norm`: LFM2's final norm (applied after the last layer, despite its name)
FINAL_NORM_NAMES = ("norm", "ln_f", "norm_f", "final_layer_norm", "final_layernorm", "final_norm", "embedding_norm")


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
        return {
            "top_k": self.top_k,
            "layers": [
                {
                    "layer": layer,
                    "median": self.medians[layer],
                    "value": self.values[layer],
                    "relative_change": None if self.change is None else self.change[layer],
                }
                for layer in self.layers
            ],
        }


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
    all_values = dict(
        zip(by_layer, weight_proxy_values([neuron_weight_scores(w, b) for w, b in by_layer.values()]), strict=False)
    )
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
    found = [
        (name, m)
        for name, m in bare.named_modules()
        if name.split(".")[-1] in FINAL_NORM_NAMES and not re.search(r"(^|\.)\d+(\.|$)", name)
    ]
    if len(found) != 1:
        names = [n for n, _ in found]
        raise ValueError(
            f"cannot identify the final norm of {type(bare).__name__} (candidates: {names}; looked for "
            f"modules named {list(FINAL_NORM_NAMES)} outside the decoder layers)"
        )
    return found[0][1]


def output_direction_logits(model: nn.Module, directions: torch.Tensor) -> torch.Tensor:
    """``unembedding(final_norm(v))`` for each row ``v`` of ``directions`` ([k, d_model]) -> [k, vocab].

    The final norm's additive bias (LayerNorm's beta) is left out: it would add the same logits to every direction."""
    norm = final_norm(model)
    param = next(norm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else directions.device
    with torch.no_grad(), full_parameters(norm):
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
    pooling: str = "auto",
) -> list[NeuronTokens]:
    """The paper's Table 1: the ``k`` most predominant hidden dimensions of ``layer`` and their top tokens.

    Dimensions are ranked by mean ``|activation|`` at the site over ``prompts`` (each prompt pooled as ``pooling`` says:
    its last token by default, its last content token for chat prompts, see :func:`prepare_probes`), or, with
    ``base_model``, by how much their input weights changed (``||w_j - w_base_j||`` over all input projections);
    ``pooling`` is then unused and must stay ``"auto"``.
    Each dimension's output direction (column ``j`` of the output projection) goes through the final norm and the
    unembedding; its ``num_tokens`` highest logits are returned.
    """
    for name, value in (("k", k), ("num_tokens", num_tokens)):
        check_int(name, value)
    check_choice("pooling", pooling, PROBE_POOLING_CHOICES)
    if base_model is not None and pooling != "auto":
        raise ValueError(
            f"`pooling` ({pooling!r}) chooses the probe tokens whose activations rank the dimensions; with "
            "`base_model` they are ranked by weight change, on no probe: leave `pooling` at 'auto'"
        )
    if (prompts is None) == (base_model is None):
        raise ValueError(
            "`top_tokens` ranks dimensions either by activation on `prompts` or by weight change against "
            "`base_model`: give exactly one of them"
        )
    (mlp,) = mlp_layers(model, [layer], field="layer")
    out_weight, _ = linear_weight(mlp.output)  # [d_model, d_ff]
    width = out_weight.shape[1]
    if base_model is not None:
        (base_mlp,) = mlp_layers(base_model, [mlp.layer])
        change = torch.zeros(width, dtype=torch.float64)
        for tuned_module, base_module in zip(mlp.inputs, base_mlp.inputs, strict=False):
            tuned_w, _ = linear_weight(tuned_module)
            base_w, _ = linear_weight(base_module)
            if tuned_w.shape != base_w.shape:
                raise ValueError(
                    f"base and tuned input weights of layer {mlp.layer} differ in shape: "
                    f"{tuple(base_w.shape)} vs {tuple(tuned_w.shape)}"
                )
            rows = (tuned_w.double() - base_w.double().to(tuned_w.device)).pow(2).sum(1).cpu()
            if rows.numel() == 2 * width:  # a fused [gate; up] projection (Phi-3): both rows of each neuron
                rows = rows[:width] + rows[width:]
            change += rows
        scores = change.sqrt()
    else:
        report = measure_monosemanticity(
            model,
            prompts,
            tokenizer,
            layers=[mlp.layer],
            site=site,
            batch_size=batch_size,
            max_length=max_length,
            pooling=pooling,
            keep_rows=False,
        )
        scores = report.accumulators[mlp.layer].mean_abs_activation().cpu()
        if scores.numel() != width:
            raise ValueError(
                f"the site {report.site} has {scores.numel()} dimensions but the output projection "
                f"`{mlp.output_name}` reads {width}; choose a site inside the MLP hidden layer"
            )
    k = min(k, width)
    picked = scores.topk(k)
    directions = out_weight[:, picked.indices.to(out_weight.device)].T  # [k, d_model]
    logits = output_direction_logits(model, directions)
    best = logits.topk(min(num_tokens, logits.shape[1]), dim=1)
    result = []
    for row, (dim, score) in enumerate(zip(picked.indices.tolist(), picked.values.tolist(), strict=False)):
        ids = best.indices[row].tolist()
        tokens = [tokenizer.decode([i]) for i in ids] if tokenizer is not None else [str(i) for i in ids]
        result.append(
            NeuronTokens(
                dimension=dim, score=float(score), token_ids=ids, tokens=tokens, logits=best.values[row].tolist()
            )
        )
    return result
