# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command line: ``train`` (see :mod:`trl_decpo.train`), ``measure``, ``compare``, ``top-tokens``.

Each subcommand parses its options with ``transformers.HfArgumentParser`` dataclasses (``--help`` lists them), the
way ``trl`` subcommands do; models load with ``from_pretrained`` (see :mod:`trl_decpo.loading`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from .loading import LoadArguments, adapter_base, is_adapter_folder, load_model, load_tokenizer


@dataclass
class ProbeArguments:
    """The probe prompts and what is measured on them."""

    prompts: str | None = field(
        default=None,
        metadata={"help": "Probe prompts: a .txt (one per line), .json, .jsonl, .csv or .parquet file, a dataset folder "
                          "saved with `save_to_disk`, or a Hub dataset id."},
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
        metadata={"help": "Module path inside a decoder layer, e.g. 'mlp.up_proj' or 'mlp.down_proj:input' "
                          "(default: the architecture's, METHOD.md section 1)."},
    )

    def __post_init__(self):
        for name in ("max_length", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value}")
        if self.max_samples == 1 or self.max_samples < 0:
            raise ValueError(f"`max_samples` must be 0 (all prompts) or >= 2 (FD compares pairs), got {self.max_samples}")


@dataclass
class OutputArguments:
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for the JSON, CSV and PNG results (created if missing)."}
    )
    plot: bool = field(default=True, metadata={"help": "Write the PNG plot into `output_dir`."})


@dataclass
class CompareArguments:
    weight_proxy_top_k: int = field(
        default=100, metadata={"help": "Weight proxy change: neurons whose input weights changed most."}
    )


@dataclass
class TopTokenArguments:
    layer: int = field(default=None, metadata={"help": "Decoder layer to inspect (required; negative counts from the end)."})
    k: int = field(default=10, metadata={"help": "Number of predominant hidden dimensions."})
    num_tokens: int = field(default=10, metadata={"help": "Top vocabulary tokens per dimension."})
    base: str | None = field(
        default=None,
        metadata={"help": "Rank dimensions by input-weight change against this base model instead of by activation "
                          "on `--prompts`."},
    )

    def __post_init__(self):
        if self.layer is None:
            raise ValueError("`layer` is required: pass --layer L")
        for name in ("k", "num_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------------------------
# Output helpers
# ----------------------------------------------------------------------------------------------------------------------


def _name(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


def _unique_names(paths: list[str]) -> list[str]:
    names = [_name(p) for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write_csv(path: str, headers: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def _prepare_output(output: OutputArguments) -> str | None:
    if output.output_dir is None:
        return None
    if os.path.exists(output.output_dir) and not os.path.isdir(output.output_dir):
        raise ValueError(f"`output_dir` {output.output_dir!r} exists and is not a folder")
    os.makedirs(output.output_dir, exist_ok=True)
    return output.output_dir


def _probe_ids(tokenizer_path: str, probes: ProbeArguments, load: LoadArguments) -> tuple[list[list[int]], object]:
    """The probe prompts as token ids (tokenized once, so that compared models see exactly the same inputs)."""
    from .measure import load_prompts, tokenize_prompts

    prompts = load_prompts(probes.prompts, probes.prompt_column, probes.split, probes.max_samples or None)
    tokenizer = load_tokenizer(tokenizer_path, load)
    return tokenize_prompts(prompts, tokenizer, probes.max_length), tokenizer


def _measure(model_path: str, token_ids, tokenizer, probes: ProbeArguments, load: LoadArguments,
             base_model: str | None = None):
    from .measure import measure_monosemanticity

    model = load_model(model_path, load, base_model)
    report = measure_monosemanticity(model, token_ids, tokenizer, layers=probes.layers, site=probes.site,
                                     batch_size=probes.batch_size, max_length=None, progress=True)
    return model, report


def _require_prompts(probes: ProbeArguments) -> None:
    if probes.prompts is None:
        raise ValueError("`prompts` is required: pass --prompts FILE_OR_DATASET")


# ----------------------------------------------------------------------------------------------------------------------
# Subcommands
# ----------------------------------------------------------------------------------------------------------------------


def measure_command(model: str, probes: ProbeArguments, load: LoadArguments, output: OutputArguments) -> dict:
    """Per-layer FD and sparsity of one model."""
    _require_prompts(probes)
    out_dir = _prepare_output(output)
    token_ids, tokenizer = _probe_ids(model, probes, load)
    _, report = _measure(model, token_ids, tokenizer, probes, load)
    headers = ["layer", "relative_depth", "fd", "sparsity"]
    rows = [[e["layer"], e["relative_depth"], e["fd"], e["sparsity"]] for e in report.to_dict()["layers"]]
    print(f"{model}: {report.num_prompts} prompts, site {report.site}")
    print(_table(headers, rows))
    print(f"mean FD {report.mean('fd'):.6g}, mean sparsity {report.mean('sparsity'):.6g}")
    result = {"model": model, **report.to_dict()}
    if out_dir:
        with open(os.path.join(out_dir, "monosemanticity.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        _write_csv(os.path.join(out_dir, "monosemanticity.csv"), headers, rows)
        if output.plot:
            from .plotting import plot_depth_profiles

            plot_depth_profiles({_name(model): report.to_dict()}, os.path.join(out_dir, "monosemanticity.png"),
                                title=f"{_name(model)} ({report.site}, {report.num_prompts} prompts)")
        print(f"wrote {out_dir}")
    return result


def compare_command(models: list[str], probes: ProbeArguments, load: LoadArguments, output: OutputArguments,
                    compare: CompareArguments) -> dict:
    """FD and sparsity of a base model and tuned models (full checkpoints or PEFT adapters), with relative changes.

    The prompts are tokenized once, with BASE's tokenizer; PEFT adapters are applied to BASE."""
    from .neurons import weight_proxy

    _require_prompts(probes)
    if len(models) < 2:
        raise ValueError("`compare` needs a BASE model and at least one TUNED model")
    if load.base_model is not None:
        raise ValueError("`base_model` is not used by `compare`: PEFT adapters among TUNED are applied to BASE (the "
                         "first model); put the model they were trained on first")
    out_dir = _prepare_output(output)
    names = _unique_names(models)
    base_path = models[0]
    token_ids, tokenizer = _probe_ids(base_path, probes, load)
    base_model, base_report = _measure(base_path, token_ids, tokenizer, probes, load)
    reports = {names[0]: base_report}
    proxies: dict = {}
    proxy_note = None
    for name, path in zip(names[1:], models[1:]):
        recorded = adapter_base(path) if is_adapter_folder(path) else None
        if recorded and os.path.normpath(recorded) != os.path.normpath(base_path):
            print(f"note: adapter {path} records base {recorded!r}; it is applied to BASE {base_path!r}",
                  file=sys.stderr)
        model, reports[name] = _measure(path, token_ids, tokenizer, probes, load, base_model=base_path)
        if reports[name].layers != base_report.layers:
            raise ValueError(f"{path} has layers {reports[name].layers} at the site, BASE has {base_report.layers}: "
                             "`compare` needs models of the same depth (or pass the same `--layers`)")
        if proxy_note is None:
            try:
                proxies[name] = weight_proxy(model, base_model, layers=reports[name].layers,
                                             top_k=compare.weight_proxy_top_k).to_dict()
            except ValueError as err:
                proxy_note = f"weight proxy not computed: {err}"
        del model
    base_fd, base_sp = base_report.fd, base_report.sparsity
    headers = ["model", "layer", "relative_depth", "fd", "sparsity", "fd_relative_change", "sparsity_minus_base"]
    rows = []
    for name, report in reports.items():
        for layer in report.layers:
            rows.append([name, layer, report.relative_depth(layer), report.fd[layer], report.sparsity[layer],
                         (report.fd[layer] - base_fd[layer]) / abs(base_fd[layer]),
                         report.sparsity[layer] - base_sp[layer]])
    if proxies:
        headers.append("weight_proxy_relative_change")
        by_key = {(n, e["layer"]): e["relative_change"] for n, p in proxies.items() for e in p["layers"]}
        for row in rows:
            row.append(by_key.get((row[0], row[1]), ""))
    print(f"base {names[0]}; {base_report.num_prompts} prompts, site {base_report.site}")
    print(_table(headers, rows))
    for name, report in reports.items():
        print(f"{name}: mean FD {report.mean('fd'):.6g}, mean sparsity {report.mean('sparsity'):.6g}")
    if proxy_note:
        print(proxy_note)
    result = {"base": names[0], "models": dict(zip(names, models)),
              "measurements": {n: r.to_dict() for n, r in reports.items()}, "weight_proxy": proxies or None,
              "weight_proxy_note": proxy_note}
    if out_dir:
        with open(os.path.join(out_dir, "compare.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        _write_csv(os.path.join(out_dir, "compare.csv"), headers, rows)
        if output.plot:
            from .plotting import plot_depth_profiles

            plot_depth_profiles({n: r.to_dict() for n, r in reports.items()}, os.path.join(out_dir, "compare.png"),
                                base=names[0], weight_proxy=proxies or None,
                                title=f"{base_report.site}, {base_report.num_prompts} prompts")
        print(f"wrote {out_dir}")
    return result


def top_tokens_command(model_path: str, top: TopTokenArguments, probes: ProbeArguments, load: LoadArguments,
                       output: OutputArguments) -> dict:
    """The paper's Table 1 for one layer."""
    from .neurons import top_tokens

    if (probes.prompts is None) == (top.base is None):
        raise ValueError("`top-tokens` ranks dimensions by activation on `--prompts` or by weight change against "
                         "`--base`: give exactly one of them")
    out_dir = _prepare_output(output)
    tokenizer = load_tokenizer(model_path, load)
    model = load_model(model_path, load)
    kwargs = {}
    if top.base is not None:
        kwargs["base_model"] = load_model(top.base, load)
        ranking = f"input-weight change against {top.base}"
    else:
        from .measure import load_prompts

        kwargs["prompts"] = load_prompts(probes.prompts, probes.prompt_column, probes.split, probes.max_samples or None)
        ranking = f"mean |activation| on {len(kwargs['prompts'])} prompts"
    neurons = top_tokens(model, tokenizer, top.layer, k=top.k, num_tokens=top.num_tokens, site=probes.site,
                         batch_size=probes.batch_size, max_length=probes.max_length, **kwargs)
    print(f"{model_path}, layer {top.layer}: top {len(neurons)} dimensions by {ranking}")
    rows = [[i + 1, n.dimension, n.score, " | ".join(repr(t) for t in n.tokens)] for i, n in enumerate(neurons)]
    print(_table(["rank", "dimension", "score", "top tokens"], rows))
    result = {"model": model_path, "layer": top.layer, "ranking": ranking,
              "dimensions": [n.__dict__ for n in neurons]}
    if out_dir:
        with open(os.path.join(out_dir, f"top_tokens_layer{top.layer}.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {out_dir}")
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------

COMMANDS = {
    "measure": ("Per-layer feature decorrelation and activation sparsity of one model.",
                (ProbeArguments, LoadArguments, OutputArguments)),
    "compare": ("The same for a BASE model and TUNED models (checkpoints or PEFT adapters), with relative changes.",
                (ProbeArguments, LoadArguments, OutputArguments, CompareArguments)),
    "top-tokens": ("The top vocabulary tokens of a layer's most predominant hidden dimensions (paper Table 1).",
                   (TopTokenArguments, ProbeArguments, LoadArguments, OutputArguments)),
}


def make_parser(command: str) -> HfArgumentParser:
    help_text, dataclasses = COMMANDS[command]
    parser = HfArgumentParser(dataclasses, prog=f"trl-decpo {command}", description=help_text)
    if command == "compare":
        parser.add_argument("models", nargs="+", metavar="BASE TUNED", help="Base model, then tuned models or adapters (list them before options that take several values, "
                                 "such as --layers).")
    else:
        parser.add_argument("model", metavar="MODEL", help="Model folder, Hub id, or PEFT adapter folder.")
    return parser


def _usage() -> str:
    lines = ["usage: trl-decpo {train," + ",".join(COMMANDS) + "} ...", "", "commands:"]
    lines += [f"  {'train':<11} DPO + the DecPO penalty (`trl dpo`'s options and DecPOConfig's), measured and saved."]
    lines += [f"  {name:<11} {text}" for name, (text, _) in COMMANDS.items()]
    lines += ["", "`trl-decpo COMMAND --help` lists the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train import main as train_main

        return train_main(rest)
    if command not in COMMANDS:
        print(f"trl-decpo: unknown command {command!r}; allowed: {['train', *COMMANDS]}\n\n{_usage()}",
              file=sys.stderr)
        return 2
    parser = make_parser(command)
    try:
        *parsed, positional = parser.parse_args_into_dataclasses(rest)
        if command == "measure":
            probes, load, output = parsed
            measure_command(positional.model, probes, load, output)
        elif command == "compare":
            probes, load, output, compare = parsed
            compare_command(positional.models, probes, load, output, compare)
        else:
            top, probes, load, output = parsed
            top_tokens_command(positional.model, top, probes, load, output)
    except ValueError as err:
        print(f"trl-decpo {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
