# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo top-tokens`: the top vocabulary tokens of a layer's most predominant hidden dimensions (the paper's
Table 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils import check_int
from .base import command_parser, run_command
from .loading import LoadArguments, check_models, load_model, load_tokenizer
from .measure import ProbeArguments
from .output import (
    OutputArguments,
    format_table,
    prepare_output,
    write_results,
)


@dataclass
class TopTokenArguments:
    layer: int = field(
        default=None, metadata={"help": "Decoder layer to inspect (required; negative counts from the end)."}
    )
    k: int = field(default=10, metadata={"help": "Number of predominant hidden dimensions."})
    num_tokens: int = field(default=10, metadata={"help": "Top vocabulary tokens per dimension."})
    base: str | None = field(
        default=None,
        metadata={
            "help": "Rank dimensions by input-weight change against this base model instead of by activation "
            "on `--prompts`."
        },
    )

    def __post_init__(self):
        if self.layer is None:
            raise ValueError("`layer` is required: pass --layer L")
        for name in ("k", "num_tokens"):
            check_int(name, getattr(self, name))


def top_tokens_command(
    model_path: str, top: TopTokenArguments, probes: ProbeArguments, load: LoadArguments, output: OutputArguments
) -> dict:
    """The paper's Table 1 for one layer."""
    from ..monosemanticity.neurons import top_tokens

    if (probes.prompts is None) == (top.base is None):
        raise ValueError(
            "`top-tokens` ranks dimensions by activation on `--prompts` or by weight change against "
            "`--base`: give exactly one of them"
        )
    if top.base is not None and probes.pooling != "auto":
        raise ValueError(
            f"`pooling` ({probes.pooling!r}) chooses the probe tokens whose mean |activation| ranks the dimensions; "
            "with `--base` they are ranked by weight change, on no probe: drop `--pooling`"
        )
    check_models([model_path] + ([top.base] if top.base is not None else []), load)
    tokenizer = load_tokenizer(model_path, load)
    out_dir = prepare_output(output)
    model = load_model(model_path, load)
    kwargs = {}
    if top.base is not None:
        kwargs["base_model"] = load_model(top.base, load)
        ranking = f"input-weight change against {top.base}"
    else:
        from ..monosemanticity.probes import load_prompts, prepare_probes

        prompts = load_prompts(probes.prompts, probes.prompt_column, probes.split, probes.max_samples or None)
        kwargs["prompts"] = prepare_probes(prompts, tokenizer, probes.max_length, probes.pooling)
        ranking = f"mean |activation| on {len(prompts)} prompts (pooling {kwargs['prompts'].pooling})"
    neurons = top_tokens(
        model,
        tokenizer,
        top.layer,
        k=top.k,
        num_tokens=top.num_tokens,
        site=probes.site,
        batch_size=probes.batch_size,
        max_length=probes.max_length,
        **kwargs,
    )
    print(f"{model_path}, layer {top.layer}: top {len(neurons)} dimensions by {ranking}")
    rows = [[i + 1, n.dimension, n.score, " | ".join(repr(t) for t in n.tokens)] for i, n in enumerate(neurons)]
    print(format_table(["rank", "dimension", "score", "top tokens"], rows))
    result = {"model": model_path, "layer": top.layer, "ranking": ranking, "dimensions": [n.__dict__ for n in neurons]}
    write_results(out_dir, f"top_tokens_layer{top.layer}", result)
    return result


def make_parser(prog: str | None = None):
    """The `top-tokens` parser (`prog` names it in a script of one's own)."""
    parser = command_parser("top-tokens", (TopTokenArguments, ProbeArguments, LoadArguments, OutputArguments), prog)
    parser.add_argument("model", metavar="MODEL", help="Model folder, Hub id, or PEFT adapter folder.")
    return parser


def main(parser, argv: list[str]) -> int:
    """Run `trl-decpo top-tokens` with the options after `top-tokens`."""
    return run_command(
        "top-tokens", parser, argv, lambda positional, *parsed: top_tokens_command(positional.model, *parsed)
    )
