# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo compare`: a BASE model against TUNED checkpoints or PEFT adapters, with relative changes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from .base import command_parser, run_command
from .loading import LoadArguments, adapter_base, check_models, is_adapter_folder
from .measure import ProbeArguments, measure_model, probe_token_ids, report_summary, require_prompts
from .output import (
    OutputArguments,
    format_table,
    prepare_output,
    unique_names,
    write_results,
)


@dataclass
class CompareArguments:
    weight_proxy_top_k: int = field(
        default=100, metadata={"help": "Weight proxy change: neurons whose input weights changed most."}
    )


def relative_change(tuned: float, base: float) -> float:
    """``(tuned - base) / |base|``; NaN for a zero base (the control of 2 prompts is always 0)."""
    return (tuned - base) / abs(base) if base != 0 else float("nan")


def compare_command(
    models: list[str], probes: ProbeArguments, load: LoadArguments, output: OutputArguments, compare: CompareArguments
) -> dict:
    """FD, its control, the participation ratio and sparsity of a base model and tuned models (full checkpoints or PEFT
    adapters), with changes against the base: relative for FD and the control, a difference for sparsity.

    The prompts are tokenized (and their pooled tokens chosen) once, with BASE's tokenizer; PEFT adapters are applied
    to BASE."""
    from ..monosemanticity.neurons import weight_proxy

    require_prompts(probes)
    if len(models) < 2:
        raise ValueError("`compare` needs a BASE model and at least one TUNED model")
    if load.base_model is not None:
        raise ValueError(
            "`base_model` is not used by `compare`: PEFT adapters among TUNED are applied to BASE (the "
            "first model); put the model they were trained on first"
        )
    check_models(models, load, adapters_on_first=True)
    names = unique_names(models)
    base_path = models[0]
    token_ids, tokenizer = probe_token_ids(base_path, probes, load)
    out_dir = prepare_output(output)
    base_model, base_report = measure_model(base_path, token_ids, tokenizer, probes, load)
    reports = {names[0]: base_report}
    proxies: dict = {}
    proxy_note = None
    for name, path in zip(names[1:], models[1:], strict=False):
        recorded = adapter_base(path) if is_adapter_folder(path) else None
        if recorded and os.path.normpath(recorded) != os.path.normpath(base_path):
            print(
                f"note: adapter {path} records base {recorded!r}; it is applied to BASE {base_path!r}", file=sys.stderr
            )
        model, reports[name] = measure_model(path, token_ids, tokenizer, probes, load, base_model=base_path)
        if reports[name].layers != base_report.layers:
            raise ValueError(
                f"{path} has layers {reports[name].layers} at the site, BASE has {base_report.layers}: "
                "`compare` needs models of the same depth (or pass the same `--layers`)"
            )
        if proxy_note is None:
            try:
                proxies[name] = weight_proxy(
                    model, base_model, layers=reports[name].layers, top_k=compare.weight_proxy_top_k
                ).to_dict()
            except ValueError as err:
                proxy_note = f"weight proxy not computed: {err}"
        del model
    base = base_report
    headers = [
        *("model", "layer", "relative_depth", "fd", "control", "participation_ratio", "sparsity"),
        *("fd_relative_change", "control_relative_change", "sparsity_minus_base"),
    ]
    rows = []
    for name, report in reports.items():
        for layer in report.layers:
            rows.append(
                [
                    name,
                    layer,
                    report.relative_depth(layer),
                    report.fd[layer],
                    report.control[layer],
                    report.participation_ratio[layer],
                    report.sparsity[layer],
                    relative_change(report.fd[layer], base.fd[layer]),
                    relative_change(report.control[layer], base.control[layer]),
                    report.sparsity[layer] - base.sparsity[layer],
                ]
            )
    if proxies:
        headers.append("weight_proxy_relative_change")
        by_key = {(n, e["layer"]): e["relative_change"] for n, p in proxies.items() for e in p["layers"]}
        for row in rows:
            row.append(by_key.get((row[0], row[1]), ""))
    print(f"base {names[0]}; {base.num_prompts} prompts, site {base.site}, pooling {base.pooling}")
    print(format_table(headers, rows))
    for name, report in reports.items():
        print(f"{name}: {report_summary(report)}")
    if proxy_note:
        print(proxy_note)
    result = {
        "base": names[0],
        "models": dict(zip(names, models, strict=False)),
        "measurements": {n: r.to_dict() for n, r in reports.items()},
        "weight_proxy": proxies or None,
        "weight_proxy_note": proxy_note,
    }
    from ..monosemanticity.plotting import plot_depth_profiles

    def plot(path):
        profiles = {n: r.to_dict() for n, r in reports.items()}
        title = f"{base_report.site}, {base_report.num_prompts} prompts"
        plot_depth_profiles(profiles, path, base=names[0], weight_proxy=proxies or None, title=title)

    write_results(out_dir, "compare", result, (headers, rows), plot if output.plot else None)
    return result


def make_parser(prog: str | None = None):
    """The `compare` parser (`prog` names it in a script of one's own)."""
    parser = command_parser("compare", (ProbeArguments, LoadArguments, OutputArguments, CompareArguments), prog)
    parser.add_argument(
        "models",
        nargs="+",
        metavar="BASE TUNED",
        help="Base model, then tuned models or adapters (list them before options that take several values, such as --layers).",
    )
    return parser


def main(parser, argv: list[str]) -> int:
    """Run `trl-decpo compare` with the options after `compare`."""
    return run_command(
        "compare", parser, argv, lambda positional, *parsed: compare_command(positional.models, *parsed)
    )
