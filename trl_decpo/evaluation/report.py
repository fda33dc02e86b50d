# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The comparison table (the paper's Table 2 for any data): metrics per model, and paired bootstrap differences.

The first model is the base, the DPO reference of every other model: its implicit rewards are 0 on every pair, so it
has no reward accuracy or margin of its own. Each later model is compared

* with the base: reward accuracy against chance (0.5 on every pair), margin against 0 (the base's), task score
  against the base's scores on the same prompts;
* with the first model after the base (e.g. DecPO vs DPO), on all three metrics.

Differences are ``later - earlier``; intervals are :func:`~trl_decpo.evaluation.stats.paired_bootstrap` percentile
intervals over the shared units (pairs for the reward metrics, prompts for the task score), one set of resamples
for every comparison on the same units.

    from trl_decpo.evaluation import comparison_table

    table = comparison_table(["base", "dpo", "decpo"], rewards={"dpo": r1, "decpo": r2}, scores=scores)
    print(table.to_markdown())
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .preference import PairRewards
from .stats import paired_bootstrap, weighted_mean


CHANCE = 0.5
METRICS = {  # key -> (column title, unit of the bootstrap)
    "reward_accuracy": ("reward acc", "pairs"),
    "reward_margin": ("margin", "pairs"),
    "task_score": ("task score", "prompts"),
}


@dataclass
class EvaluationTable:
    """Per-model metrics, the reward-accuracy baselines and the comparisons (see the module docstring)."""

    names: list[str]
    metrics: dict[str, dict]
    baselines: dict
    comparisons: list[dict]
    bootstrap: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "base": self.names[0],
            "metrics": self.metrics,
            "baselines": self.baselines,
            "comparisons": self.comparisons,
            "bootstrap": self.bootstrap,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        return format_markdown(self)


def _cell(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def comparison_table(
    names: Sequence[str],
    rewards: Mapping[str, PairRewards] | None = None,
    scores: Mapping[str, Sequence[float]] | None = None,
    length_shortcut: Mapping[str, float] | None = None,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> EvaluationTable:
    """Build the table. ``names[0]`` is the base; ``rewards`` holds the :class:`PairRewards` of every later model
    (against the base, on the same pairs), ``scores`` the task score of every model (base included) on the same
    prompts; ``length_shortcut`` is :func:`~trl_decpo.evaluation.preference.length_shortcut`'s result."""
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"the table needs a base and at least one other model, with distinct names; got {names}")
    base, later = names[0], names[1:]
    if rewards is None and scores is None:
        raise ValueError("nothing to compare: give the preference rewards, the task scores, or both")
    if rewards is not None and sorted(rewards) != sorted(later):
        raise ValueError(f"`rewards` must hold every model but the base {later}, got {sorted(rewards)}")
    if scores is not None and sorted(scores) != sorted(names):
        raise ValueError(f"`scores` must hold every model {names}, got {sorted(scores)}")

    # per-unit data of each arm: name -> metric -> tensor
    units: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    if rewards is not None:
        sizes = {len(r.chosen) for r in rewards.values()}
        if len(sizes) != 1:
            raise ValueError(f"the models' rewards are not on the same pairs (sizes {sorted(sizes)})")
        for name in later:
            units[name]["reward_accuracy"] = rewards[name].correct
            units[name]["reward_margin"] = rewards[name].margins.double()
    if scores is not None:
        sizes = {len(s) for s in scores.values()}
        if len(sizes) != 1:
            raise ValueError(f"the models' task scores are not on the same prompts (sizes {sorted(sizes)})")
        for name in names:
            units[name]["task_score"] = torch.as_tensor(list(scores[name]), dtype=torch.float64)

    metrics = {}
    for name in names:
        row = {key: float(values.mean()) for key, values in units[name].items()}
        if rewards is not None and name != base:
            row["chosen_reward"] = float(rewards[name].chosen.mean())
            row["rejected_reward"] = float(rewards[name].rejected.mean())
        if rewards is not None and name == base:
            row.update(reward_accuracy=None, reward_margin=None)  # the reference: every reward is 0
        metrics[name] = row

    baselines = {}
    if rewards is not None:
        baselines = {"chance": CHANCE, **({} if length_shortcut is None else dict(length_shortcut))}

    def compare(metric: str, a_name: str, b_name: str) -> dict:
        b = units[b_name][metric]
        if metric in units[a_name]:
            a, against = units[a_name][metric], a_name
        else:  # the base on a reward metric: chance accuracy, zero margin
            value = CHANCE if metric == "reward_accuracy" else 0.0
            a = torch.full_like(b, value)
            against = f"{a_name} (chance {CHANCE})" if metric == "reward_accuracy" else f"{a_name} (0)"
        result = paired_bootstrap(weighted_mean, a, b, num_resamples=num_resamples, confidence=confidence, seed=seed)
        return {"metric": metric, "unit": METRICS[metric][1], "model": b_name, "against": against, **result.to_dict()}

    comparisons = []
    pairs = [(base, name) for name in later]
    pairs += [(later[0], name) for name in later[1:]]
    for a_name, b_name in pairs:
        for metric in METRICS:
            if metric in units[b_name]:
                comparisons.append(compare(metric, a_name, b_name))
    bootstrap = {
        "num_resamples": num_resamples,
        "confidence": confidence,
        "seed": seed,
        "interval": "percentile",
        "units": {"reward_accuracy": "pairs", "reward_margin": "pairs", "task_score": "prompts"},
    }
    return EvaluationTable(names, metrics, baselines, comparisons, bootstrap)


def format_markdown(table: EvaluationTable) -> str:
    """The model table (with the reward-accuracy baselines as rows) and the difference table, in Markdown."""
    present = [key for key in METRICS if any(key in row for row in table.metrics.values())]
    lines = ["| model | " + " | ".join(METRICS[k][0] for k in present) + " |"]
    lines.append("|---|" + "---:|" * len(present))
    for name in table.names:
        row = table.metrics[name]
        cells = [_cell(row.get(key), signed=key == "reward_margin") for key in present]
        if name == table.names[0] and "reward_accuracy" in present:
            cells = [c if key == "task_score" else "(reference)" for c, key in zip(cells, present, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    baseline_rows = [("chance / constant", table.baselines.get("chance"))]
    baseline_rows.append(("length shortcut (chosen is shorter)", table.baselines.get("chosen_shorter")))
    if "reward_accuracy" in present:
        for label, value in baseline_rows:
            if value is not None:
                cells = [_cell(value) if key == "reward_accuracy" else "" for key in present]
                lines.append(f"| _{label}_ | " + " | ".join(cells) + " |")
    confidence = int(round(table.bootstrap["confidence"] * 100))
    lines += [
        "",
        f"| comparison | metric | earlier | later | difference | {confidence}% interval | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for c in table.comparisons:
        interval = f"[{c['low']:+.4f}, {c['high']:+.4f}]"
        lines.append(
            f"| {c['model']} vs {c['against']} | {METRICS[c['metric']][0]} | {c['a']:.4f} | {c['b']:.4f} | "
            f"{c['difference']:+.4f} | {interval} | {c['verdict']} |"
        )
    b = table.bootstrap
    lines += [
        "",
        f"Intervals: paired bootstrap, {b['num_resamples']} resamples of the pairs (reward metrics) or prompts (task "
        f"score), percentile, seed {b['seed']}; the verdict is 'higher' or 'lower' when the interval excludes 0.",
    ]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines)
