# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo compare`: BASE against TUNED models or PEFT adapters (:func:`~trl_decpo.compare_monosemanticity`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..independent import SAESettings
from .base import OutputArguments, command, option
from .loading import LoadArguments
from .measure import ProbeArguments


@dataclass
class CompareArguments:
    weight_proxy_top_k: int = option(100, "Weight proxy change: neurons whose input weights changed most.")
    labels: str | None = option(None, "Field of `--prompts` with each prompt's concept label (k-sparse probing).")
    sae_layer: int | None = option(None, "Train an SAE on BASE's tokens at this layer and score every model with it.")
    sae: str | None = option(None, "With `--sae_layer`: a saved SAE folder (SAELens format) instead of training one.")


def compare_command(
    models: list[str], probes: ProbeArguments, load: LoadArguments, output: OutputArguments, compare: CompareArguments
) -> dict:
    """The prompts are tokenized once, with BASE's tokenizer; PEFT adapters among TUNED are applied to BASE."""
    from ..monosemanticity import compare_monosemanticity
    from ..monosemanticity.probes import load_labels

    if len(models) < 2:
        raise ValueError("`compare` needs a BASE model and at least one TUNED model")
    if load.base_model is not None:
        raise ValueError(
            "`base_model` is not used by `compare`: PEFT adapters among TUNED are applied to BASE (the first model); "
            "put the model they were trained on first"
        )
    if compare.sae is not None and compare.sae_layer is None:
        raise ValueError("`sae` is the SAE of one layer: pass `--sae_layer` too")
    sae = None
    if compare.sae_layer is not None:  # a trained SAE is saved beside the results
        folder = os.path.join(output.output_dir, "sae") if output.output_dir and not compare.sae else None
        sae = SAESettings(compare.sae_layer, sae=compare.sae, output_dir=folder)
    labels = load_labels(probes.prompts, compare.labels, probes.max_samples, probes.split) if compare.labels else None
    comparison = compare_monosemanticity(
        models[0], models[1:], probes.load(), pooling=probes.pooling, progress=True, labels=labels, sae=sae,
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
