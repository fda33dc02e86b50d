# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo compare`: BASE against TUNED models or PEFT adapters (:func:`~trl_decpo.compare_monosemanticity`)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import OutputArguments, command, option
from .loading import LoadArguments
from .measure import ProbeArguments


@dataclass
class CompareArguments:
    weight_proxy_top_k: int = option(100, "Weight proxy change: neurons whose input weights changed most.")


def compare_command(
    models: list[str], probes: ProbeArguments, load: LoadArguments, output: OutputArguments, compare: CompareArguments
) -> dict:
    """The prompts are tokenized once, with BASE's tokenizer; PEFT adapters among TUNED are applied to BASE."""
    from ..monosemanticity import compare_monosemanticity

    if len(models) < 2:
        raise ValueError("`compare` needs a BASE model and at least one TUNED model")
    if load.base_model is not None:
        raise ValueError(
            "`base_model` is not used by `compare`: PEFT adapters among TUNED are applied to BASE (the first model); "
            "put the model they were trained on first"
        )
    comparison = compare_monosemanticity(
        models[0], models[1:], probes.load(), pooling=probes.pooling, progress=True,
        weight_proxy_top_k=compare.weight_proxy_top_k, **probes.measuring(), **load.loading(),
    )  # fmt: skip
    print(comparison.to_text())
    if output.output_dir:
        comparison.save(output.output_dir, output.plot)
        print(f"wrote {output.output_dir}")
    return comparison.to_dict()


make_parser, main = command(
    "compare", (ProbeArguments, LoadArguments, OutputArguments, CompareArguments), compare_command, "models",
    nargs="+", metavar="BASE TUNED", help="Base model, then tuned models or adapters (list them before options that "
    "take several values, such as --layers).",
)  # fmt: skip
