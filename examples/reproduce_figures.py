# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The paper's monosemanticity figures for a base model and two fine-tunes of it (e.g. DPO and DecPO).

Wraps `trl-decpo compare BASE A B` (checkpoints or PEFT adapters, the same probe prompts for all) and draws, into
`--output-dir`:

* `fig_fd_by_depth.png`: FD per layer against relative depth for the three models (paper Fig. 3 style);
* `fig_fd_relative_change.png`: `(FD_model - FD_base) / |FD_base|` per layer for A and B;
* `fig_sparsity_difference.png`: activation sparsity of B minus A per layer (the paper plots DecPO minus DPO);
* `compare.{json,csv,png}` from `trl-decpo compare` (with the weight proxy where the models have MLP input biases).

    python examples/reproduce_figures.py BASE DPO_CHECKPOINT DECPO_CHECKPOINT --prompts probes.jsonl \\
        --output-dir outputs/figures [--max_samples 1000] [--load_in_4bit] [...any `trl-decpo compare` option]
"""

import argparse
import os

from trl_decpo.cli.compare import compare_command, make_parser


def main(argv=None):
    wrapper = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    wrapper.add_argument("base")
    wrapper.add_argument("a", help="first fine-tune (e.g. DPO)")
    wrapper.add_argument("b", help="second fine-tune (e.g. DecPO)")
    wrapper.add_argument("--output-dir", default="outputs/figures")
    wrapper.add_argument("--labels", nargs=2, default=["DPO", "DecPO"], help="names of A and B in the figures")
    own, rest = wrapper.parse_known_args(argv)
    parser = make_parser(prog="reproduce_figures.py")
    parsed = parser.parse_args_into_dataclasses([own.base, own.a, own.b, "--output_dir", own.output_dir, *rest])
    *dataclasses, positional = parsed
    probes, load, output, compare = dataclasses
    result = compare_command(positional.models, probes, load, output, compare)
    draw(result, own.labels, own.output_dir)


def draw(result, labels, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["measurements"])
    base, a, b = (result["measurements"][n]["layers"] for n in names)
    depth = [e["relative_depth"] for e in base]
    series = {"base": base, labels[0]: a, labels[1]: b}
    figures = {
        "fig_fd_by_depth.png": ("feature decorrelation (FD)", {k: [e["fd"] for e in v] for k, v in series.items()}),
        "fig_fd_relative_change.png": (
            "FD relative change vs base",
            {
                k: [(e["fd"] - f["fd"]) / abs(f["fd"]) for e, f in zip(v, base, strict=True)]
                for k, v in series.items()
                if k != "base"
            },
        ),
        "fig_sparsity_difference.png": (
            f"activation sparsity, {labels[1]} minus {labels[0]}",
            {f"{labels[1]} - {labels[0]}": [y["sparsity"] - x["sparsity"] for x, y in zip(a, b, strict=True)]},
        ),
    }
    for filename, (ylabel, lines) in figures.items():
        fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
        for label, values in lines.items():
            ax.plot(depth, values, marker="o", markersize=3, label=label)
        if "change" in ylabel or "minus" in ylabel:
            ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("relative depth (layer / (layers - 1))")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(os.path.join(out_dir, filename), dpi=120)
        plt.close(fig)
        print(f"wrote {os.path.join(out_dir, filename)}")


if __name__ == "__main__":
    main()
