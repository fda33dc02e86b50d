# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The analysis that docs/analysis_plan.md declares, of the models `research.seeds` measured: the seed as the unit,
t intervals with Holm's correction per family, non-inferiority against the declared margins, the two-level bootstrap
beside them, the paper's claims in one table, and the rule for the default layer.

    python -m research.seed_analysis outputs/seeds      # writes outputs/seeds/report.md and analysis.json
"""

from __future__ import annotations

import argparse
import json
import os

from trl_decpo.evaluation.seeds import holm, non_inferiority, seed_bootstrap, seed_interval, two_level_bootstrap


# declared in docs/analysis_plan.md before the run: 20% of DPO's gain in the main job's seeds 0 and 1
ACCURACY_MARGIN = 0.2 * (0.853 - 0.5)
OFFENSIVENESS_MARGIN = 0.2 * (0.0452 - 0.0178)
ALPHA = 0.05
FIGURE = "seed_differences_by_depth.png"


def _mean(values) -> float:
    return sum(values) / len(values)


def load(output_dir: str) -> tuple[dict, dict[str, list[dict]]]:
    """The base's record and each arm's records, by seed, of the seeds every arm finished."""
    import torch

    folder = os.path.join(output_dir, "models")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".pt"))  # not a `.tmp` a stopped run left
    records = [torch.load(os.path.join(folder, f), weights_only=False) for f in names]
    base = next(r for r in records if r["name"] == "base")
    arms: dict[str, dict[int, dict]] = {}
    for record in records:
        if record["name"] != "base":
            arms.setdefault(record["name"], {})[record["seed"]] = record
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in arms.values())))
    if len(seeds) < 2:
        raise ValueError(f"{output_dir}: fewer than 2 seeds finished every arm ({seeds})")
    return base, {arm: [by_seed[s] for s in seeds] for arm, by_seed in arms.items()}


MEASURES = {  # key -> (label, value of a record at layer L, higher is better)
    "fd": ("FD", lambda r, L: r["fd"][L], True),
    "control": ("FD's control", lambda r, L: r["control"][L], True),
    "probe_k1": ("k = 1 probe accuracy (toxic vs benign)", lambda r, L: r["probing"][L]["accuracy"]["1"], True),
    "sae_features": ("SAE features per neuron", lambda r, L: r["sae"][L]["mean_neuron_features"], False),
    "margin": ("reward margin", lambda r, L: _mean(r["reward_margins"]), True),
    "fd_mean": ("FD, mean over layers", lambda r, L: _mean(list(r["fd"].values())), True),
    "control_mean": ("control, mean over layers", lambda r, L: _mean(list(r["control"].values())), True),
    "sparsity": ("sparsity", lambda r, L: r["sparsity"][L], True),
    "probe_dense": ("dense probe accuracy", lambda r, L: r["probing"][L]["accuracy"]["dense"], True),
    "sae_explained": ("SAE explained variance", lambda r, L: r["sae"][L]["explained_variance"], True),
    "penalty": ("penalty on held-out pairs", lambda r, L: r["penalty"][L], False),
}
# the per-unit data of a measure, for the two-level bootstrap (seeds, then units); the others resample seeds only
UNITS = {
    "margin": lambda r, L: r["reward_margins"],
    "probe_k1": lambda r, L: r["probing_correct"][L]["1"],
    "probe_dense": lambda r, L: r["probing_correct"][L]["dense"],
}
PRIMARY = ("fd", "control", "probe_k1", "sae_features")
SECONDARY = ("margin", "fd_mean", "control_mean", "sparsity", "probe_dense", "sae_explained", "penalty")


def family(keys, a: list[dict], b: list[dict], layer: int) -> list[dict]:
    """``b - a`` per seed for each measure of one family, t intervals, Holm-adjusted p-values and verdicts."""
    rows = []
    for key in keys:
        label, value, higher = MEASURES[key]
        per_seed = [value(r, layer) for r in a], [value(r, layer) for r in b]
        result = seed_interval(*per_seed)
        if key in UNITS:
            boot = two_level_bootstrap(*([UNITS[key](r, layer) for r in arm] for arm in (a, b)))
        else:
            boot = seed_bootstrap(*per_seed)
        rows.append({"key": key, "label": label, "higher_is_better": higher, **result.to_dict(), "bootstrap": boot})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows]), strict=True):
        row["p_holm"] = adjusted
        row["significant"] = adjusted < ALPHA
        better = (row["mean"] > 0) == row["higher_is_better"]
        row["reading"] = ("better" if better else "worse") if row["significant"] else "no detectable difference"
        row["bootstrap_agrees"] = row["bootstrap"]["verdict"] == row["verdict"]
    return rows


def wilson_low(accuracy: float, n: int, z: float = 1.959964) -> float:
    """The lower end of the 95% Wilson interval of a proportion ``accuracy`` of ``n``."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return centre - half


def probe_readable(base: dict, layer: int) -> dict:
    """The plan's rule for P3: read only where the base model's dense probe is above chance at the layer."""
    probing = base["probing"][layer]
    low = wilson_low(probing["accuracy"]["dense"], probing["num_test"])
    return {
        "dense": probing["accuracy"]["dense"],
        "wilson_low": low,
        "chance": probing["chance"],
        "readable": low > probing["chance"],
    }


def alignment(a: list[dict], b: list[dict]) -> dict:
    """N1 and N2: non-inferiority against the declared margins ("worse" only when the two-sided 95% interval lies
    wholly on the bad side of 0), and the two-level bootstrap's one-sided bound against the same margin beside it."""
    out = {}
    for key, field, margin, higher in (
        ("accuracy", "reward_correct", ACCURACY_MARGIN, True),
        ("offensiveness", "offensiveness", OFFENSIVENESS_MARGIN, False),
    ):
        per_seed = [[_mean(r[field]) for r in arm] for arm in (a, b)]
        row = non_inferiority(*per_seed, margin, higher_is_better=higher, alpha=ALPHA)
        two_sided = seed_interval(*per_seed)
        if (two_sided.high < 0) if higher else (two_sided.low > 0):  # detectably worse: said with the verdict
            row["verdict"] = "non-inferior, detectably worse" if row["verdict"] == "non-inferior" else "worse"
        boot = two_level_bootstrap([r[field] for r in a], [r[field] for r in b], confidence=1 - ALPHA)
        bound = boot["low_one_sided"] if higher else boot["high_one_sided"]
        holds = bound > -margin if higher else bound < margin
        boot["verdict"] = "non-inferior" if holds else "not shown non-inferior"
        out[key] = {**row, "a": _mean(per_seed[0]), "b": _mean(per_seed[1]), "two_sided": two_sided.to_dict()}
        out[key]["bootstrap"] = {**boot, "bound": bound}
    return out


def depth_claim(base: dict, dpo: list[dict]) -> dict:
    """C1: FD(DPO) - FD(base) by thirds of the depth, and first third minus last third (per seed; per layer: the
    exploratory `per_layer` rows)."""
    layers = sorted(base["fd"])
    third = len(layers) // 3
    parts = {"first": layers[:third], "middle": layers[third : 2 * third], "last": layers[2 * third :]}

    def gain(record, chosen):
        return _mean([record["fd"][L] - base["fd"][L] for L in chosen])

    thirds = {
        name: seed_interval([0.0] * len(dpo), [gain(r, chosen) for r in dpo]).to_dict()
        for name, chosen in parts.items()
    }
    first_minus_last = seed_interval(
        [gain(r, parts["last"]) for r in dpo], [gain(r, parts["first"]) for r in dpo]
    ).to_dict()
    return {"thirds": thirds, "first_minus_last": first_minus_last}


def per_layer(base: dict, arms: dict[str, list[dict]]) -> list[dict]:
    """Exploratory, not corrected: for each layer, FD and its control, the seed-level t interval of DPO - base,
    DecPO - DPO and (where run) DecPO at the alternative layer - DPO; the rows of the per-layer figure."""
    dpo = arms["dpo"]
    comparisons = [("DPO - base", [base] * len(dpo), dpo), ("DecPO - DPO", dpo, arms["decpo"])]
    if "decpo_alt" in arms:
        comparisons.append(("DecPO (alternative layer) - DPO", dpo, arms["decpo_alt"]))
    return [
        {"comparison": label, "metric": metric, "layer": L,
         **seed_interval([r[metric][L] for r in a], [r[metric][L] for r in b]).to_dict()}
        for label, a, b in comparisons
        for metric in ("fd", "control")
        for L in sorted(base[metric])
    ]  # fmt: skip


def layer_rule(dpo: list[dict], decpo: list[dict], alt: list[dict], layers: list[int], base: dict) -> dict:
    """The plan's rule for the default layer: the alternative arm non-inferior to DPO on N1 and N2, and better than
    the default arm (each against DPO at its own layer) on at least one of P3 and P4, Holm over those that count (P3
    only where the base's dense probe beats chance at both layers)."""
    default, other = layers
    probe_counts = all(probe_readable(base, layer)["readable"] for layer in layers)
    rows = []
    for key in ("probe_k1", "sae_features") if probe_counts else ("sae_features",):
        label, value, higher = MEASURES[key]
        gain_default = [value(b, default) - value(a, default) for a, b in zip(dpo, decpo, strict=True)]
        gain_alt = [value(b, other) - value(a, other) for a, b in zip(dpo, alt, strict=True)]
        result = seed_interval(gain_default, gain_alt).to_dict()
        rows.append({"key": key, "label": label, "higher_is_better": higher, **result})
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows]), strict=True):
        row["p_holm"] = adjusted
        row["alt_better"] = adjusted < ALPHA and (row["mean"] > 0) == row["higher_is_better"]
    aligned = alignment(dpo, alt)
    non_inferior = all(aligned[k]["verdict"].startswith("non-inferior") for k in ("accuracy", "offensiveness"))
    move = non_inferior and any(row["alt_better"] for row in rows)
    return {"rows": rows, "alignment": aligned, "move_default_to": other if move else None}


def _disagreements(rows: list[dict]) -> list[str]:
    """A line for each measure whose bootstrap verdict differs from its t interval's."""
    return [
        f"The bootstrap disagrees on {row['label']}: {row['bootstrap']['verdict']} "
        f"[{row['bootstrap']['low']:+.4f}, {row['bootstrap']['high']:+.4f}] against the t interval's {row['verdict']}."
        for row in rows
        if not row["bootstrap_agrees"]
    ]


def _interval(row) -> str:
    return f"{row['mean']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def _family_table(rows: list[dict]) -> list[str]:
    lines = ["| measure | better | DecPO - DPO [95% CI] | p (Holm) | reading |", "|---|---|---|---|---|"]
    for row in rows:
        better = "higher" if row["higher_is_better"] else "lower"
        lines.append(f"| {row['label']} | {better} | {_interval(row)} | {row['p_holm']:.3f} | {row['reading']} |")
    return lines


def analyse(output_dir: str, command: str = "", minutes: float | None = None, layers: list[int] | None = None) -> dict:
    base, arms = load(output_dir)
    dpo, decpo, alt = arms["dpo"], arms["decpo"], arms.get("decpo_alt")
    layers = layers or base["layers"]  # [default, alternative], as research.seeds measured them
    default = layers[0]
    seeds = [r["seed"] for r in dpo]
    result = {
        "seeds": seeds,
        "layers": layers,
        "primary": family(PRIMARY, dpo, decpo, default),
        "probe_readable": probe_readable(base, default),
        "secondary": family(SECONDARY, dpo, decpo, default),
        "alignment": alignment(dpo, decpo),
        "depth": depth_claim(base, dpo),
        "layer_rule": layer_rule(dpo, decpo, alt, layers, base) if alt else None,
        "per_layer": per_layer(base, arms),
        "minutes": minutes,
    }
    from research.figures import plot_seed_differences

    figure = plot_seed_differences(result["per_layer"], os.path.join(output_dir, FIGURE), layers)
    if not result["probe_readable"]["readable"]:  # the plan's rule: P3 stays in the family, no claim rests on it
        row = next(r for r in result["primary"] if r["key"] == "probe_k1")
        row["reading"] = "uninformative (the base's dense probe is at chance)"
    with open(os.path.join(output_dir, "analysis.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, default=str)
    lines = [
        "# Seeds as the unit: DecPO against DPO (docs/analysis_plan.md)",
        "",
        f"Command: `{command or 'python -m research.seed_analysis ' + output_dir}`"
        + (f"; {minutes:.0f} minutes." if minutes else "."),
        f"Seeds {seeds} (the unit); each interval is over seeds: mean of the per-seed differences, 95% t interval "
        f"({len(seeds) - 1} degrees of freedom). The probes, held-out pairs and prompts are the same for every seed.",
        "",
        f"## Primary: monosemanticity at layer {default}, DecPO - DPO (Holm over four)",
        "",
        *_family_table(result["primary"]),
    ]
    lines += [""] + _disagreements(result["primary"])
    lines += [
        "",
        "## Alignment: non-inferiority against the declared margins",
        "",
        "| measure | DPO | DecPO | DecPO - DPO [95% CI] | one-sided 95% bound | margin | verdict | two-level bootstrap: "
        "bound, verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("accuracy", "held-out reward accuracy"), ("offensiveness", "offensiveness (lower better)")):
        row = result["alignment"][key]
        b = row["bootstrap"]
        sign = "-" if row["higher_is_better"] else "+"
        lines.append(
            f"| {label} | {row['a']:.4f} | {row['b']:.4f} | {_interval(row['two_sided'])} | {row['bound']:+.4f} | "
            f"{sign}{row['margin']:.4f} | {row['verdict']} | {b['bound']:+.4f}, {b['verdict']} |"
        )
    lines += ["", f"## Secondary, layer {default} unless said, DecPO - DPO (Holm over seven)", ""]
    lines += _family_table(result["secondary"]) + [""] + _disagreements(result["secondary"])
    depth = result["depth"]
    lines += [
        "",
        "## The paper's claims",
        "",
        "| claim | paper | ours [95% CI] | verdict (DecPO rows: Holm-corrected, as above) |",
        "|---|---|---|---|",
        f"| DPO raises FD over the base, first third of the layers | higher | {_interval(depth['thirds']['first'])} | "
        f"{depth['thirds']['first']['verdict']} |",
        f"| ... middle third | higher | {_interval(depth['thirds']['middle'])} | {depth['thirds']['middle']['verdict']} |",
        f"| ... last third | higher | {_interval(depth['thirds']['last'])} | {depth['thirds']['last']['verdict']} |",
        f"| most in early layers: first third minus last third | higher | {_interval(depth['first_minus_last'])} | "
        f"{depth['first_minus_last']['verdict']} |",
    ]
    for row in result["primary"] + [r for r in result["secondary"] if r["key"] == "penalty"]:
        paper = "higher" if row["higher_is_better"] else "lower"
        lines.append(
            f"| DecPO vs DPO: {row['label']}, layer {default} | {paper} | {_interval(row)} | {row['reading']} |"
        )
    for key, label in (("accuracy", "held-out reward accuracy"), ("offensiveness", "offensiveness")):
        row = result["alignment"][key]
        lines.append(
            f"| DecPO vs DPO: {label}, no cost beyond the margin | not worse | {_interval(row['two_sided'])} | "
            f"{row['verdict']} |"
        )
    margin = next(r for r in result["secondary"] if r["key"] == "margin")
    lines.append(f"| DecPO vs DPO: reward margin | not worse | {_interval(margin)} | {margin['reading']} |")
    lines += [
        "",
        f"![per-layer differences, seed-level 95% t bands]({os.path.basename(figure)})",
        "",
        f"{FIGURE}: FD and its control per layer, the mean over seeds of DPO - base, DecPO - DPO"
        + (f" and DecPO at layer {layers[-1]} - DPO" if alt else "")
        + ", with seed-level 95% t bands (exploratory: not corrected; the rows are in analysis.json, `per_layer`).",
        "",
        "FD(DPO) - FD(base) per layer (exploratory: not corrected, not tested):",
        "",
    ]
    lines += [
        f"- layer {row['layer']}: {_interval(row)}"
        for row in result["per_layer"]
        if (row["comparison"], row["metric"]) == ("DPO - base", "fd")
    ]
    rule = result["layer_rule"]
    if rule:
        lines += ["", f"## The default layer: {layers[1]} against {layers[0]} (the plan's rule)", ""]
        for row in rule["rows"]:
            lines.append(
                f"- {row['label']}: (DecPO@{layers[1]} - DPO) - (DecPO@{layers[0]} - DPO) = {_interval(row)}, "
                f"p (Holm) {row['p_holm']:.3f}"
            )
        verdicts = {k: v["verdict"] for k, v in rule["alignment"].items() if k in ("accuracy", "offensiveness")}
        lines.append(f"- DecPO@{layers[1]} against DPO: {verdicts}")
        moved = rule["move_default_to"]
        lines.append(f"- Rule: {'move the default to layer ' + str(moved) if moved else 'keep the default layer'}.")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text, flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    analyse(args.output_dir)


if __name__ == "__main__":
    main()
