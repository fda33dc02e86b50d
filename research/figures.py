# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The main job's figures: the per-layer differences of FD and its control (DPO - base, DecPO - DPO) with their
bands, the raw levels by depth, and the held-out margin over training steps (the paper's margin-during-training view);
and the seed study's per-layer differences with seed-level bands.

    from research.figures import plot_differences_by_depth, plot_fd_by_depth, plot_margin_curves
    from research.figures import plot_seed_differences   # the seed study's (research/seed_analysis.py)
"""

from __future__ import annotations


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fd_by_depth(base, arms: dict, path: str, hooked: int | None = None) -> str:
    """Two panels (FD, control) against the layer index; one line per arm (seed mean), thin lines per seed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"base": "0.4", "dpo": "tab:blue", "decpo": "tab:red"}
    labels = {"base": "base", "dpo": "DPO", "decpo": "DecPO"}
    for ax, metric, title in zip(
        axes, ("fd", "control"), ("FD (1 - mean cosine)", "control (1 - mean centred cos^2)"), strict=True
    ):
        layers = base.report.layers
        ax.plot(layers, [getattr(base.report, metric)[i] for i in layers], color=colours["base"], label="base")
        for kind, results in arms.items():
            per_seed = [[getattr(r.report, metric)[i] for i in layers] for r in results]
            for values in per_seed:
                ax.plot(layers, values, color=colours[kind], alpha=0.3, linewidth=0.8)
            mean = [sum(v[j] for v in per_seed) / len(per_seed) for j in range(len(layers))]
            ax.plot(layers, mean, color=colours[kind], label=f"{labels[kind]} (mean of {len(per_seed)} seeds)")
        if hooked is not None:
            ax.axvline(hooked, color="k", linestyle=":", linewidth=0.8, label=f"hooked layer {hooked}")
        ax.set_xlabel("decoder layer")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Held-out prompts, SmolLM2-135M-Instruct: higher = more decorrelated")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_differences_by_depth(
    base, arms: dict, path: str, hooked: int | None = None, num_resamples: int = 1000
) -> tuple[str, list[dict]]:
    """Four panels: DPO - base (top) and DecPO - DPO (bottom), FD (left) and its control (right), against the layer;
    one line per seed with its 95% paired bootstrap band over the probes (``trl_decpo.proxy_differences``), and 0.
    Returns the path and the rows (each layer's difference and interval)."""
    from trl_decpo import proxy_differences

    plt = _pyplot()
    seeds = [r.seed for r in arms["dpo"]]
    reports = {"base": base.report, **{f"{kind}{r.seed}": r.report for kind, results in arms.items() for r in results}}
    pairs = [("base", f"dpo{s}") for s in seeds] + [(f"dpo{s}", f"decpo{s}") for s in seeds]
    rows = proxy_differences(reports, pairs, metrics=("fd", "control"), num_resamples=num_resamples)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for i, (label, earlier) in enumerate((("DPO - base", "base"), ("DecPO - DPO", "dpo"))):
        for j, metric in enumerate(("fd", "control")):
            ax = axes[i][j]
            for k, seed in enumerate(seeds):
                pair = ("base", f"dpo{seed}") if earlier == "base" else (f"dpo{seed}", f"decpo{seed}")
                mine = [r for r in rows if (r["against"], r["model"], r["metric"]) == (*pair, metric)]
                layers = [r["layer"] for r in mine]
                colour = ("tab:blue", "tab:red", "tab:green", "tab:purple")[k % 4]
                ax.plot(layers, [r["difference"] for r in mine], color=colour, label=f"seed {seed}")
                ax.fill_between(layers, [r["low"] for r in mine], [r["high"] for r in mine], color=colour, alpha=0.2)
            ax.axhline(0, color="k", linewidth=0.8)
            if hooked is not None:
                ax.axvline(hooked, color="k", linestyle=":", linewidth=0.8)
            ax.set_title(f"{label}: {'FD' if metric == 'fd' else 'control'}")
            ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("decoder layer")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "Per-layer differences with 95% paired bootstrap bands over the held-out probes (training runs fixed)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, rows


def plot_seed_differences(rows: list[dict], path: str, hooked: list[int] = ()) -> str:
    """The seed study's per-layer differences (``research.seed_analysis.per_layer``): one panel per metric (FD, its
    control), one line per comparison (the mean over seeds) with its seed-level 95% t band, 0, and the hooked layers."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    comparisons = list(dict.fromkeys(r["comparison"] for r in rows))
    for ax, metric in zip(axes, ("fd", "control"), strict=True):
        for comparison, colour in zip(comparisons, ("0.3", "tab:red", "tab:green"), strict=False):
            mine = sorted((r for r in rows if (r["comparison"], r["metric"]) == (comparison, metric)),
                          key=lambda r: r["layer"])  # fmt: skip
            layers = [r["layer"] for r in mine]
            ax.plot(layers, [r["mean"] for r in mine], color=colour, label=comparison)
            ax.fill_between(layers, [r["low"] for r in mine], [r["high"] for r in mine], color=colour, alpha=0.2)
        ax.axhline(0, color="k", linewidth=0.8)
        for layer in hooked:
            ax.axvline(layer, color="k", linestyle=":", linewidth=0.8)
        ax.set_title("FD" if metric == "fd" else "FD's control")
        ax.set_xlabel("decoder layer")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Per-layer differences: mean over seeds, 95% t band over seeds (dotted: the hooked layers)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_margin_curves(arms: dict, path: str) -> str:
    """Held-out DPO reward margin (left) and accuracy (right) against the training step, per arm and seed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"dpo": "tab:blue", "decpo": "tab:red"}
    labels = {"dpo": "DPO", "decpo": "DecPO"}
    styles = ["-", "--", ":", "-."]
    for kind, results in arms.items():
        for k, result in enumerate(results):
            steps = [0] + [c[0] for c in result.curve]
            for ax, column, start in ((axes[0], 1, 0.0), (axes[1], 2, 0.0)):
                ax.plot(
                    steps,
                    [start] + [c[column] for c in result.curve],
                    color=colours[kind],
                    linestyle=styles[k % len(styles)],
                    marker="o",
                    markersize=3,
                    label=f"{labels[kind]} seed {result.seed}",
                )
    axes[0].set_title("held-out reward margin")
    axes[1].set_title("held-out reward accuracy (0 at step 0: all rewards tie)")
    axes[1].axhline(0.5, color="0.5", linewidth=0.8, linestyle=":")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
