# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""PNG figures of the monosemanticity proxies (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence


LABELS = {
    "fd": "feature decorrelation (FD)",
    "control": "FD control: 1 - mean cos^2, centred rows",
    "sparsity": "activation sparsity",
}


def _metrics(records) -> tuple[str, ...]:
    """``fd``, ``control`` (when every layer entry of ``records`` has one: older results have none) and ``sparsity``."""
    with_control = all(e.get("control") is not None for r in records for e in r["layers"])
    return ("fd", "control", "sparsity") if with_control else ("fd", "sparsity")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_proxies_by_step(history: Sequence[Mapping], path: str, title: str | None = None) -> str:
    """FD, its control (when recorded) and sparsity against the training step, one line per layer (coloured by depth)
    and their mean (black).

    ``history`` holds records as :class:`~trl_decpo.MonosemanticityCallback` writes them:
    ``{"step": int, "num_layers": int, "layers": [{"layer", "fd", "control", "sparsity"}, ...]}``.
    """
    if not history:
        raise ValueError("no measurements to plot")
    plt = _pyplot()
    steps = [record["step"] for record in history]
    num_layers = history[-1]["num_layers"]
    layers = [entry["layer"] for entry in history[-1]["layers"]]
    cmap = plt.get_cmap("viridis")
    metrics = _metrics(history)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), constrained_layout=True)
    for ax, metric in zip(axes, metrics, strict=True):
        label = LABELS[metric]
        for layer in layers:
            values = [next((e[metric] for e in r["layers"] if e["layer"] == layer), float("nan")) for r in history]
            ax.plot(steps, values, color=cmap(layer / max(num_layers - 1, 1)), linewidth=1, alpha=0.8)
        means = [sum(e[metric] for e in r["layers"]) / len(r["layers"]) for r in history]
        ax.plot(steps, means, color="black", linewidth=2, marker="o", label="mean over layers")
        hooked = history[-1].get("hooked_layers") or []
        if hooked:
            hooked_means = [sum(e[metric] for e in r["layers"] if e["layer"] in hooked) / len(hooked) for r in history]
            ax.plot(
                steps,
                hooked_means,
                color="tab:red",
                linewidth=2,
                linestyle="--",
                marker="s",
                label=f"penalised layers {hooked}",
            )
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max(num_layers - 1, 1)))
    fig.colorbar(sm, ax=axes, label="decoder layer")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_depth_profiles(
    profiles: Mapping[str, Mapping],
    path: str,
    base: str | None = None,
    weight_proxy: Mapping[str, Mapping] | None = None,
    title: str | None = None,
) -> str:
    """Per-layer proxies against relative depth, one line per model (paper Fig. 3/4/6 style): FD, its control (when
    every profile has it) and sparsity.

    ``profiles`` maps a model name to a :meth:`MonosemanticityReport.to_dict` result. With ``base`` (one of the names),
    two more panels show each other model's relative FD change ``(tuned - base) / |base|`` and its sparsity minus the
    base's (the paper plots DecPO minus DPO); with ``weight_proxy``
    (name -> :meth:`WeightProxyReport.to_dict`), a panel shows the weight proxy's relative change.
    """
    if not profiles:
        raise ValueError("no measurements to plot")
    plt = _pyplot()
    with_base = base is not None and len(profiles) > 1
    metrics = _metrics(profiles.values())
    panels = len(metrics) + 2 * with_base + bool(weight_proxy)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), constrained_layout=True)
    axes = list(axes) if panels > 1 else [axes]

    def series(profile, metric):
        return [e["relative_depth"] for e in profile["layers"]], [e[metric] for e in profile["layers"]]

    for ax, metric in zip(axes, metrics, strict=False):
        label = LABELS[metric]
        for name, profile in profiles.items():
            x, y = series(profile, metric)
            ax.plot(x, y, marker="o", markersize=3, label=name, linewidth=2 if name == base else 1.3)
        ax.set_xlabel("relative depth (layer / (layers - 1))")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    index = len(metrics)
    if with_base:
        for metric, label, change in (
            ("fd", f"FD relative change vs {base}", lambda t, b: (t - b) / abs(b)),
            ("sparsity", f"sparsity minus {base}", lambda t, b: t - b),
        ):
            ax = axes[index]
            index += 1
            _, base_values = series(profiles[base], metric)
            for name, profile in profiles.items():
                if name != base:
                    x, y = series(profile, metric)
                    ax.plot(
                        x,
                        [change(t, b) for t, b in zip(y, base_values, strict=False)],
                        marker="o",
                        markersize=3,
                        label=name,
                    )
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlabel("relative depth")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    if weight_proxy:
        ax = axes[index]
        for name, report in weight_proxy.items():
            entries = [e for e in report["layers"] if e.get("relative_change") is not None]
            if entries:
                ax.plot(
                    [e["layer"] for e in entries],
                    [e["relative_change"] for e in entries],
                    marker="o",
                    markersize=3,
                    label=name,
                )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("weight proxy relative change")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_paper_figures(compare_result: Mapping, out_dir: str, labels: Sequence[str] = ("DPO", "DecPO")) -> list[str]:
    """The paper's figures for a base model and two fine-tunes A and B, from a ``trl-decpo compare BASE A B`` result
    (its ``compare.json``): ``fig_fd_by_depth.png`` (FD per layer for the three models), ``fig_fd_relative_change.png``
    (``(FD - FD_base) / |FD_base|`` for A and B) and ``fig_sparsity_difference.png`` (B's sparsity minus A's, as the
    paper plots DecPO minus DPO); with the FD control in the result, also ``fig_control_by_depth.png`` (the control
    per layer for the three models, FD's companion). Returns the paths written."""
    result, labels = compare_result, list(labels)
    plt = _pyplot()
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
    if "control" in _metrics([{"layers": v} for v in series.values()]):
        figures["fig_control_by_depth.png"] = (
            LABELS["control"],
            {k: [e["control"] for e in v] for k, v in series.items()},
        )
    paths = []
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
        path = os.path.join(out_dir, filename)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
