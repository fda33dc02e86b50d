# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo measure`: per-layer feature decorrelation, its control and activation sparsity of one model."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils import check_choice, check_int
from .base import command_parser, run_command
from .loading import LoadArguments, check_models, load_model, load_tokenizer
from .output import (
    OutputArguments,
    display_name,
    format_table,
    prepare_output,
    write_results,
)


POOLING_HELP = (
    "Which tokens of a probe make its row: 'last' (its last token), 'mean' (the mean over its tokens, chat template "
    "tokens included), 'last_content' (the last token of the last message's content, before the chat template's "
    "generation prompt such as '<|im_end|>\\n<|im_start|>assistant\\n'; plain-text probes: their last token), or "
    "'auto' (default: 'last_content' for chat-message probes, 'last' for plain text). See docs/measurement.md."
)


@dataclass
class ProbeArguments:
    """The probe prompts and what is measured on them."""

    prompts: str | None = field(
        default=None,
        metadata={
            "help": "Probe prompts: a .txt (one per line), .json, .jsonl, .csv or .parquet file, a dataset folder "
            "saved with `save_to_disk`, or a Hub dataset id."
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Field or column holding the prompt."})
    split: str = field(default="train", metadata={"help": "Dataset split (dataset folders and Hub ids)."})
    max_samples: int = field(
        default=1000, metadata={"help": "Use at most this many prompts (the paper: 1000); 0 = all of them."}
    )
    max_length: int = field(default=512, metadata={"help": "Keep the last this-many tokens of each prompt."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass."})
    layers: list[int] | None = field(default=None, metadata={"help": "Decoder layers to measure (default: all)."})
    site: str | None = field(
        default=None,
        metadata={
            "help": "Module path inside a decoder layer, e.g. 'mlp.up_proj' or 'mlp.down_proj:input' "
            "(default: the architecture's, see docs/method.md)."
        },
    )
    pooling: str = field(default="auto", metadata={"help": POOLING_HELP})

    def __post_init__(self):
        from ..monosemanticity.probes import POOLING_CHOICES

        check_choice("pooling", self.pooling, POOLING_CHOICES)
        for name in ("max_length", "batch_size"):
            check_int(name, getattr(self, name))
        if self.max_samples == 1 or self.max_samples < 0:
            raise ValueError(
                f"`max_samples` must be 0 (all prompts) or >= 2 (FD compares pairs), got {self.max_samples}"
            )


def probe_token_ids(tokenizer_path: str, probes: ProbeArguments, load: LoadArguments) -> tuple[object, object]:
    """The probe prompts as token ids with their pooled positions (a ``ProbeSet``, prepared once so that compared
    models see exactly the same inputs and rows), and the tokenizer."""
    from ..monosemanticity.probes import load_prompts, prepare_probes

    prompts = load_prompts(probes.prompts, probes.prompt_column, probes.split, probes.max_samples or None)
    tokenizer = load_tokenizer(tokenizer_path, load)
    return prepare_probes(prompts, tokenizer, probes.max_length, probes.pooling), tokenizer


def measure_model(
    model_path: str, probe_set, tokenizer, probes: ProbeArguments, load: LoadArguments, base_model: str | None = None
):
    from ..monosemanticity.measure import measure_monosemanticity

    model = load_model(model_path, load, base_model)
    report = measure_monosemanticity(
        model,
        probe_set,
        tokenizer,
        layers=probes.layers,
        site=probes.site,
        batch_size=probes.batch_size,
        max_length=None,
        progress=True,
    )
    return model, report


def require_prompts(probes: ProbeArguments) -> None:
    if probes.prompts is None:
        raise ValueError("`prompts` is required: pass --prompts FILE_OR_DATASET")


def report_summary(report) -> str:
    """One line: the means over the measured layers."""
    return (
        f"mean FD {report.mean('fd'):.6g}, mean control {report.mean('control'):.6g}, mean participation ratio "
        f"{report.mean('participation_ratio'):.6g}, mean sparsity {report.mean('sparsity'):.6g}"
    )


def measure_command(model: str, probes: ProbeArguments, load: LoadArguments, output: OutputArguments) -> dict:
    """Per-layer FD, its control, the participation ratio and sparsity of one model."""
    from ..monosemanticity.measure import METRICS

    require_prompts(probes)
    check_models([model], load)
    token_ids, tokenizer = probe_token_ids(model, probes, load)
    out_dir = prepare_output(output)  # once the prompts and the tokenizer are there: no empty folder on an error
    _, report = measure_model(model, token_ids, tokenizer, probes, load)
    headers = ["layer", "relative_depth", *METRICS]
    rows = [[e[key] for key in headers] for e in report.to_dict()["layers"]]
    print(f"{model}: {report.num_prompts} prompts, site {report.site}, pooling {report.pooling}")
    print(format_table(headers, rows))
    print(report_summary(report))
    result = {"model": model, **report.to_dict()}
    from ..monosemanticity.plotting import plot_depth_profiles

    def plot(path):
        title = f"{display_name(model)} ({report.site}, {report.num_prompts} prompts)"
        plot_depth_profiles({display_name(model): report.to_dict()}, path, title=title)

    write_results(out_dir, "monosemanticity", result, (headers, rows), plot if output.plot else None)
    return result


def make_parser(prog: str | None = None):
    """The `measure` parser (`prog` names it in a script of one's own)."""
    parser = command_parser("measure", (ProbeArguments, LoadArguments, OutputArguments), prog)
    parser.add_argument("model", metavar="MODEL", help="Model folder, Hub id, or PEFT adapter folder.")
    return parser


def main(parser, argv: list[str]) -> int:
    """Run `trl-decpo measure` with the options after `measure`."""
    return run_command("measure", parser, argv, lambda positional, *parsed: measure_command(positional.model, *parsed))
