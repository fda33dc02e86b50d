# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo top-tokens`: the paper's Table 1 for any model and layer (:func:`~trl_decpo.top_tokens`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils import check_int
from .base import OutputArguments, command, option
from .loading import LoadArguments
from .measure import ProbeArguments


@dataclass
class TopTokenArguments:
    layer: int = option(None, "Decoder layer to inspect (required; negative counts from the end).")
    k: int = option(10, "Number of predominant hidden dimensions.")
    num_tokens: int = option(10, "Top vocabulary tokens per dimension.")
    base: str | None = option(None, "Rank by input-weight change against this base model instead of by activation.")

    def __post_init__(self):
        if self.layer is None:
            raise ValueError("`layer` is required: pass --layer L")
        for name in ("k", "num_tokens"):
            check_int(name, getattr(self, name))


def top_tokens_command(
    model: str, top: TopTokenArguments, probes: ProbeArguments, load: LoadArguments, output: OutputArguments
) -> dict:
    from ..monosemanticity import load_model_and_adapter, load_tokenizer, prepare_probes, top_tokens
    from ..monosemanticity.tables import Table, save_results
    from ..sources import check_models

    if (probes.prompts is None) == (top.base is None):
        raise ValueError(
            "`top-tokens` ranks dimensions by activation on `--prompts` or by weight change against `--base`: give "
            "exactly one of them"
        )
    if top.base is not None and probes.pooling != "auto":
        raise ValueError(
            f"`pooling` ({probes.pooling!r}) chooses the probe tokens whose mean |activation| ranks the dimensions; "
            "with `--base` they are ranked by weight change, on no probe: drop `--pooling`"
        )
    check_models([model, top.base, load.base_model], load.model_revision)
    tokenizer, prompts = load_tokenizer(model, load.base_model, load.trust_remote_code), probes.load(required=False)
    if top.base is not None:
        ranked = {"base_model": load_model_and_adapter(top.base, load.base_model, **load.loading())}
        ranking = f"input-weight change against {top.base}"
    else:
        ranked = {"prompts": prepare_probes(prompts, tokenizer, probes.max_length, probes.pooling)}
        ranking = f"mean |activation| on {len(prompts)} prompts (pooling {ranked['prompts'].pooling})"
    neurons = top_tokens(
        load_model_and_adapter(model, load.base_model, **load.loading()), tokenizer, top.layer, k=top.k,
        num_tokens=top.num_tokens, site=probes.site, batch_size=probes.batch_size, max_length=probes.max_length, **ranked,
    )  # fmt: skip
    print(f"{model}, layer {top.layer}: top {len(neurons)} dimensions by {ranking}")
    rows = [[i + 1, n.dimension, n.score, " | ".join(repr(t) for t in n.tokens)] for i, n in enumerate(neurons)]
    print(Table(["rank", "dimension", "score", "top tokens"], rows).to_text())
    result = {"model": model, "layer": top.layer, "ranking": ranking, "dimensions": [n.__dict__ for n in neurons]}
    if output.output_dir:
        save_results(output.output_dir, f"top_tokens_layer{top.layer}", result)
        print(f"wrote {output.output_dir}")
    return result


make_parser, main = command(
    "top-tokens", (TopTokenArguments, ProbeArguments, LoadArguments, OutputArguments), top_tokens_command, "model",
    metavar="MODEL", help="Model folder, Hub id, or PEFT adapter folder.",
)  # fmt: skip
