# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo measure`: per-layer feature decorrelation and activation sparsity of one model."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils import check_int
from .base import command_parser, run_command
from .loading import LoadArguments, load_model, load_tokenizer
from .output import OutputArguments, display_name, format_table, prepare_output, write_results


HELP = "Per-layer feature decorrelation and activation sparsity of one model."


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

    def __post_init__(self):
        for name in ("max_length", "batch_size"):
            check_int(name, getattr(self, name))
        if self.max_samples == 1 or self.max_samples < 0:
            raise ValueError(
                f"`max_samples` must be 0 (all prompts) or >= 2 (FD compares pairs), got {self.max_samples}"
            )


def probe_token_ids(
    tokenizer_path: str, probes: ProbeArguments, load: LoadArguments
) -> tuple[list[list[int]], object]:
    """The probe prompts as token ids (tokenized once, so that compared models see exactly the same inputs)."""
    from ..monosemanticity.probes import load_prompts, tokenize_prompts

    prompts = load_prompts(probes.prompts, probes.prompt_column, probes.split, probes.max_samples or None)
    tokenizer = load_tokenizer(tokenizer_path, load)
    return tokenize_prompts(prompts, tokenizer, probes.max_length), tokenizer


def measure_model(
    model_path: str, token_ids, tokenizer, probes: ProbeArguments, load: LoadArguments, base_model: str | None = None
):
    from ..monosemanticity.measure import measure_monosemanticity

    model = load_model(model_path, load, base_model)
    report = measure_monosemanticity(
        model,
        token_ids,
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


def measure_command(model: str, probes: ProbeArguments, load: LoadArguments, output: OutputArguments) -> dict:
    """Per-layer FD and sparsity of one model."""
    require_prompts(probes)
    out_dir = prepare_output(output)
    token_ids, tokenizer = probe_token_ids(model, probes, load)
    _, report = measure_model(model, token_ids, tokenizer, probes, load)
    headers = ["layer", "relative_depth", "fd", "sparsity"]
    rows = [[e["layer"], e["relative_depth"], e["fd"], e["sparsity"]] for e in report.to_dict()["layers"]]
    print(f"{model}: {report.num_prompts} prompts, site {report.site}")
    print(format_table(headers, rows))
    print(f"mean FD {report.mean('fd'):.6g}, mean sparsity {report.mean('sparsity'):.6g}")
    result = {"model": model, **report.to_dict()}
    from ..monosemanticity.plotting import plot_depth_profiles

    def plot(path):
        title = f"{display_name(model)} ({report.site}, {report.num_prompts} prompts)"
        plot_depth_profiles({display_name(model): report.to_dict()}, path, title=title)

    write_results(out_dir, "monosemanticity", result, (headers, rows), plot if output.plot else None)
    return result


def make_parser(subparsers=None, prog: str | None = None):
    """The `measure` parser: a subcommand of `trl-decpo` when `subparsers` is given, else a standalone one."""
    parser = command_parser(subparsers, "measure", HELP, (ProbeArguments, LoadArguments, OutputArguments), prog)
    parser.add_argument("model", metavar="MODEL", help="Model folder, Hub id, or PEFT adapter folder.")
    return parser


def main(parser, argv: list[str]) -> int:
    """Run `trl-decpo measure` with the options after `measure`."""
    return run_command("measure", parser, argv, lambda positional, *parsed: measure_command(positional.model, *parsed))
