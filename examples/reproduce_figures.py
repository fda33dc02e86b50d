# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The paper's monosemanticity figures for a base model and two fine-tunes of it (e.g. DPO and DecPO).

Runs `trl-decpo compare BASE A B` (checkpoints or PEFT adapters, the same probe prompts for all), then draws into
`--output-dir`:

* `fig_fd_by_depth.png`: FD per layer against relative depth for the three models (paper Fig. 3 style);
* `fig_fd_relative_change.png`: `(FD_model - FD_base) / |FD_base|` per layer for A and B;
* `fig_sparsity_difference.png`: activation sparsity of B minus A per layer (the paper plots DecPO minus DPO);
* `compare.{json,csv,png}` from `trl-decpo compare` (with the weight proxy where the models have MLP input biases).

    python examples/reproduce_figures.py BASE DPO_CHECKPOINT DECPO_CHECKPOINT --prompts probes.jsonl \\
        --output-dir outputs/figures [--max_samples 1000] [--load_in_4bit] [...any `trl-decpo compare` option]
"""

import argparse
import json
import os

from trl_decpo.cli import main as trl_decpo
from trl_decpo.monosemanticity.plotting import plot_paper_figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("a", help="first fine-tune (e.g. DPO)")
    parser.add_argument("b", help="second fine-tune (e.g. DecPO)")
    parser.add_argument("--output-dir", default="outputs/figures")
    parser.add_argument("--labels", nargs=2, default=["DPO", "DecPO"], help="names of A and B in the figures")
    args, compare_options = parser.parse_known_args(argv)
    status = trl_decpo(["compare", args.base, args.a, args.b, "--output_dir", args.output_dir, *compare_options])
    if status != 0:
        raise SystemExit(status)
    with open(os.path.join(args.output_dir, "compare.json"), encoding="utf-8") as f:
        for path in plot_paper_figures(json.load(f), args.output_dir, args.labels):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
