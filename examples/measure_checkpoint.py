# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Feature decorrelation (FD) and activation sparsity per layer of a saved checkpoint or PEFT adapter folder.

FD = 1 - mean pairwise cosine of the prompts' activations at each layer's MLP (the last token of each prompt; higher =
more monosemantic), sparsity = their variance across hidden units (definitions: docs/method.md, docs/measurement.md).
The prompts: a .txt file (one per line), .json, .jsonl, .csv or .parquet, a saved dataset folder or a Hub dataset id.

    python examples/measure_checkpoint.py outputs/decpo --prompts prompts.txt
    python examples/measure_checkpoint.py outputs/decpo-adapter --prompts probes.jsonl --layers 5 10 15

The same from the command line, with JSON, CSV and a figure in `out/`, and several models against their base:

    trl-decpo measure outputs/decpo --prompts prompts.txt --output_dir out/
    trl-decpo compare BASE outputs/dpo-adapter outputs/decpo-adapter --prompts prompts.txt --output_dir out/
"""

import argparse
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_decpo import load_prompts, measure_monosemanticity


def load(path: str, dtype: torch.dtype):
    """A full checkpoint, or a PEFT adapter applied to the base model it records."""
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype)
        if not os.path.isfile(os.path.join(path, "tokenizer_config.json")):  # adapter saved without its tokenizer
            path = model.peft_config["default"].base_model_name_or_path
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint folder, PEFT adapter folder or Hub id")
    parser.add_argument("--prompts", required=True, help="probe prompts (file, dataset folder or Hub dataset id)")
    parser.add_argument("--prompt-column", default="prompt", help="field holding the prompt in .json/.jsonl/tables")
    parser.add_argument("--max-samples", type=int, default=1000, help="at most this many prompts (the paper: 1000)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="decoder layers (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)

    model, tokenizer = load(args.model, getattr(torch, args.dtype))
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    prompts = load_prompts(args.prompts, column=args.prompt_column, max_samples=args.max_samples)
    report = measure_monosemanticity(model, prompts, tokenizer, layers=args.layers, batch_size=args.batch_size)

    print(f"{args.model}: {report.num_prompts} prompts, site {report.site}")
    print(f"{'layer':>5} {'depth':>6} {'FD':>10} {'sparsity':>12}")
    for layer in report.layers:
        depth = report.relative_depth(layer)
        print(f"{layer:>5} {depth:>6.3f} {report.fd[layer]:>10.6f} {report.sparsity[layer]:>12.6g}")
    print(f"mean FD {report.mean('fd'):.6f}, mean sparsity {report.mean('sparsity'):.6g}")
    return report


if __name__ == "__main__":
    main()
