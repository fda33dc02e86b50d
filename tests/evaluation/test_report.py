"""trl_decpo.evaluation.report: the comparison table against brute-force bootstrap intervals."""

import numpy as np
import pytest
import torch

from trl_decpo.evaluation import NO_DIFFERENCE, PairRewards, bootstrap_weights, comparison_table


def brute_interval(a, b, num_resamples, seed, confidence=0.95):
    """Percentile interval of mean(b) - mean(a) over resampled units, one unit at a time from the draw counts."""
    weights = bootstrap_weights(len(a), num_resamples, seed).numpy()
    diffs = []
    for w in weights:
        units = np.repeat(np.arange(len(a)), w.astype(int))  # the resample as a list of units
        diffs.append(np.mean(np.asarray(b, float)[units]) - np.mean(np.asarray(a, float)[units]))
    tail = (1 - confidence) / 2
    return np.quantile(diffs, [tail, 1 - tail])


def rewards(chosen, rejected, beta=0.1):
    return PairRewards(torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64), beta)


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(0)
    n = 40
    dpo = rewards(torch.randn(n, generator=gen).tolist(), torch.randn(n, generator=gen).tolist())
    # DecPO: chosen clearly above rejected on most pairs
    decpo = rewards((torch.randn(n, generator=gen) + 2).tolist(), torch.randn(n, generator=gen).tolist())
    scores = {
        "base": torch.rand(25, generator=gen).tolist(),
        "dpo": torch.rand(25, generator=gen).tolist(),
        "decpo": (torch.rand(25, generator=gen) + 0.5).tolist(),
    }
    return {"dpo": dpo, "decpo": decpo}, scores


def test_metrics_and_comparisons_against_brute_force(inputs):
    pair_rewards, scores = inputs
    table = comparison_table(
        ["base", "dpo", "decpo"],
        rewards=pair_rewards,
        scores=scores,
        length_shortcut={"chosen_shorter": 0.3, "chosen_longer": 0.6},
        num_resamples=300,
        seed=4,
    )
    for name, r in pair_rewards.items():
        correct = [float(c > j) for c, j in zip(r.chosen.tolist(), r.rejected.tolist(), strict=True)]
        margins = [c - j for c, j in zip(r.chosen.tolist(), r.rejected.tolist(), strict=True)]
        assert table.metrics[name]["reward_accuracy"] == pytest.approx(sum(correct) / len(correct))
        assert table.metrics[name]["reward_margin"] == pytest.approx(sum(margins) / len(margins))
    for name, s in scores.items():
        assert table.metrics[name]["task_score"] == pytest.approx(sum(s) / len(s))
    assert table.metrics["base"]["reward_accuracy"] is None and table.metrics["base"]["reward_margin"] is None
    assert table.baselines == {"chance": 0.5, "chosen_shorter": 0.3, "chosen_longer": 0.6}

    pairs = [(c["model"], c["against"], c["metric"]) for c in table.comparisons]
    assert pairs == [
        ("dpo", "base (chance 0.5)", "reward_accuracy"),
        ("dpo", "base (0)", "reward_margin"),
        ("dpo", "base", "task_score"),
        ("decpo", "base (chance 0.5)", "reward_accuracy"),
        ("decpo", "base (0)", "reward_margin"),
        ("decpo", "base", "task_score"),
        ("decpo", "dpo", "reward_accuracy"),
        ("decpo", "dpo", "reward_margin"),
        ("decpo", "dpo", "task_score"),
    ]

    def arm(name, metric, n):
        if name == "base" and metric != "task_score":
            return [0.5 if metric == "reward_accuracy" else 0.0] * n
        if metric == "task_score":
            return scores[name]
        r = pair_rewards[name]
        return (r.correct if metric == "reward_accuracy" else r.margins).tolist()

    for c in table.comparisons:
        b = arm(c["model"], c["metric"], 40)
        a = arm(c["against"].split(" ")[0], c["metric"], len(b))
        low, high = brute_interval(a, b, 300, seed=4)
        assert c["low"] == pytest.approx(low, abs=1e-9) and c["high"] == pytest.approx(high, abs=1e-9)
        assert c["difference"] == pytest.approx(np.mean(b) - np.mean(a))
        assert c["unit"] == ("prompts" if c["metric"] == "task_score" else "pairs")
        expected = "higher" if low > 0 else "lower" if high < 0 else NO_DIFFERENCE
        assert c["verdict"] == expected
    verdicts = {(c["model"], c["against"], c["metric"]): c["verdict"] for c in table.comparisons}
    assert verdicts[("decpo", "dpo", "reward_margin")] == "higher"  # +2 on the chosen rewards
    assert verdicts[("dpo", "base (0)", "reward_margin")] == NO_DIFFERENCE  # noise around 0


def test_identical_models_have_no_detectable_difference():
    r = rewards([0.2, -0.1, 0.3, 0.0], [0.1, 0.1, -0.2, 0.0])
    same = {"base": [1.0, 2.0, 3.0], "a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}
    table = comparison_table(["base", "a", "b"], rewards={"a": r, "b": r}, scores=same, num_resamples=100)
    later = [c for c in table.comparisons if c["against"] == "a" or c["metric"] == "task_score"]
    assert later and all(c["verdict"] == NO_DIFFERENCE and c["difference"] == 0 for c in later)
    markdown = table.to_markdown()
    assert (
        "| b vs a | reward acc | 0.5000 | 0.5000 | +0.0000 | [+0.0000, +0.0000] | no detectable difference |"
        in markdown
    )
    assert "| base | (reference) | (reference) | 2.0000 |" in markdown
    assert "| _chance / constant_ | 0.5000 |  |  |" in markdown


def test_scores_only_and_markdown_columns():
    table = comparison_table(["base", "tuned"], scores={"base": [0.0, 1.0], "tuned": [1.0, 1.0]}, num_resamples=50)
    markdown = table.to_markdown()
    assert markdown.splitlines()[0] == "| model | task score |"
    assert "chance" not in markdown and table.baselines == {}
    assert [c["metric"] for c in table.comparisons] == ["task_score"]


def test_bad_inputs():
    r = rewards([0.0], [0.0])
    with pytest.raises(ValueError, match="a base and at least one other model"):
        comparison_table(["base"], rewards={})
    with pytest.raises(ValueError, match="nothing to compare"):
        comparison_table(["base", "a"])
    with pytest.raises(ValueError, match="`rewards` must hold every model but the base"):
        comparison_table(["base", "a", "b"], rewards={"a": r})
    with pytest.raises(ValueError, match="not on the same prompts"):
        comparison_table(["base", "a"], scores={"base": [1.0], "a": [1.0, 2.0]})
