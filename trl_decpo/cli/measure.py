# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo measure`: one model's per-layer FD, control and sparsity (:func:`~trl_decpo.measure_monosemanticity`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..monosemanticity import PROBE_POOLING_CHOICES, load_prompts
from ..utils import check_choice, check_int
from .base import OutputArguments, command, option
from .loading import LoadArguments


@dataclass
class ProbeArguments:
    prompts: str | None = option(
        None, "Probe prompts: a .txt (one per line), .json, .jsonl, .csv or .parquet file, a saved dataset or Hub id."
    )
    prompt_column: str = option("prompt", "Field or column holding the prompt.")
    split: str = option("train", "Dataset split (dataset folders and Hub ids).")
    max_samples: int = option(1000, "Use at most this many prompts (the paper: 1000); 0 = all of them.")
    max_length: int = option(512, "Keep the last this-many tokens of each prompt.")
    batch_size: int = option(8, "Prompts per forward pass.")
    layers: list[int] | None = option(None, "Decoder layers to measure (default: all).")
    site: str | None = option(
        None, "Module path in a decoder layer, e.g. 'mlp.up_proj' or 'mlp.down_proj:input' (default: docs/method.md)."
    )
    pooling: str = option(
        "auto",
        "Probe tokens making its row: 'last', 'mean' (chat template included), 'last_content' (last token of the last "
        "message's content) or 'auto' ('last_content' for chat probes, 'last' for text); docs/measurement.md.",
    )

    def __post_init__(self):
        check_choice("pooling", self.pooling, PROBE_POOLING_CHOICES)
        for name in ("max_length", "batch_size"):
            check_int(name, getattr(self, name))
        if self.max_samples == 1 or self.max_samples < 0:
            raise ValueError(
                f"`max_samples` must be 0 (all prompts) or >= 2 (FD compares pairs), got {self.max_samples}"
            )

    def load(self, required: bool = True) -> list | None:
        """The prompts; ``None`` when none were given (an error if they are ``required``)."""
        if self.prompts is None and required:
            raise ValueError("`prompts` is required: pass --prompts FILE_OR_DATASET")
        if self.prompts is not None:
            return load_prompts(self.prompts, self.prompt_column, self.split, self.max_samples or None)

    def measuring(self) -> dict:
        return {"layers": self.layers, "site": self.site, "batch_size": self.batch_size, "max_length": self.max_length}


def measure_command(model: str, probes: ProbeArguments, load: LoadArguments, output: OutputArguments) -> dict:
    from ..monosemanticity import load_model_and_adapter, load_tokenizer, measure_monosemanticity
    from ..monosemanticity.tables import report_summary, report_table
    from ..sources import check_models

    prompts = probes.load()
    check_models([model, load.base_model], load.model_revision)
    tokenizer = load_tokenizer(model, load.base_model, load.trust_remote_code)
    loaded = load_model_and_adapter(model, load.base_model, **load.loading())
    report = measure_monosemanticity(
        loaded, prompts, tokenizer, pooling=probes.pooling, progress=True, **probes.measuring()
    )
    print(f"{model}: {report.num_prompts} prompts, site {report.site}, pooling {report.pooling}")
    print(f"{report_table(report).to_text()}\n{report_summary(report)}")
    if output.output_dir:
        report.save(output.output_dir, model, output.plot)
        print(f"wrote {output.output_dir}")
    return {"model": model, **report.to_dict()}


make_parser, main = command(
    "measure", (ProbeArguments, LoadArguments, OutputArguments), measure_command, "model", metavar="MODEL",
    help="Model folder, Hub id, or PEFT adapter folder.",
)  # fmt: skip
