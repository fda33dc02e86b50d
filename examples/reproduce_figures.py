# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The paper's monosemanticity figures for a base model and two fine-tunes of it (e.g. DPO and DecPO).

Measures BASE, A and B (checkpoints or PEFT adapters, applied to BASE) on the same probe prompts with
`compare_monosemanticity` (what `trl-decpo compare BASE A B` runs), then draws into `--output-dir`:

* `fig_fd_by_depth.png`: FD per layer against relative depth for the three models (paper Fig. 3 style);
* `fig_fd_relative_change.png`: `(FD_model - FD_base) / |FD_base|` per layer for A and B;
* `fig_sparsity_difference.png`: activation sparsity of B minus A per layer (the paper plots DecPO minus DPO);
* `fig_control_by_depth.png`: FD's control per layer for the three models;
* `compare.{json,csv,png}`: what `trl-decpo compare` writes (with the weight proxy where the models have MLP input
  biases).

    python examples/reproduce_figures.py BASE DPO_CHECKPOINT DECPO_CHECKPOINT --prompts probes.jsonl \\
        --output-dir outputs/figures [--max-samples 1000] [--layers 5 10] [--load-in-4bit] [...]
"""

import argparse

from trl import ModelConfig

from trl_decpo import compare_monosemanticity, load_prompts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("a", help="first fine-tune (e.g. DPO)")
    parser.add_argument("b", help="second fine-tune (e.g. DecPO)")
    parser.add_argument("--prompts", required=True, help="probe prompts (file, dataset folder or Hub dataset id)")
    parser.add_argument("--prompt-column", default="prompt", help="field holding the prompt in .json/.jsonl/tables")
    parser.add_argument("--max-samples", type=int, default=1000, help="at most this many prompts (the paper: 1000)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="decoder layers (default: all)")
    parser.add_argument("--pooling", default="auto", help="which probe tokens make the rows (docs/measurement.md)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--load-in-4bit", action="store_true", help="load the models in 4-bit (bitsandbytes)")
    parser.add_argument("--output-dir", default="outputs/figures")
    parser.add_argument("--labels", nargs=2, default=["DPO", "DecPO"], help="names of A and B in the figures")
    args = parser.parse_args(argv)

    prompts = load_prompts(args.prompts, column=args.prompt_column, max_samples=args.max_samples or None)
    comparison = compare_monosemanticity(
        args.base,
        [args.a, args.b],
        prompts,
        layers=args.layers,
        pooling=args.pooling,
        batch_size=args.batch_size,
        model_args=ModelConfig(dtype=args.dtype, load_in_4bit=args.load_in_4bit),
        progress=True,
    )
    print(comparison.to_text())
    for path in comparison.save(args.output_dir) + comparison.paper_figures(args.output_dir, args.labels):
        print(f"wrote {path}")
    return comparison


if __name__ == "__main__":
    main()
