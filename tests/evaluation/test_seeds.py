"""Seeds as the unit: the t interval and test against textbook values, non-inferiority against a margin, Holm's
step-down, and the two-level bootstrap's coverage of seed and unit variance."""

import math

import pytest
import torch

from trl_decpo.evaluation.seeds import holm, non_inferiority, seed_interval, two_level_bootstrap


def test_the_t_interval_and_test_of_the_paired_differences():
    a = [0.80, 0.85, 0.83, 0.90, 0.78, 0.88, 0.84, 0.86]
    d = [0.02, -0.01, 0.03, 0.01, 0.04, 0.00, 0.02, 0.01]
    b = [x + y for x, y in zip(a, d, strict=True)]
    result = seed_interval(a, b)
    mean = sum(d) / 8
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 7)
    assert result.mean == pytest.approx(mean) and result.sd == pytest.approx(sd)
    half = 2.364624251592785 * sd / math.sqrt(8)  # t(0.975, 7)
    assert (result.low, result.high) == pytest.approx((mean - half, mean + half))
    t = mean / (sd / math.sqrt(8))
    # two-sided p-value by integrating Student's t density (7 degrees of freedom) numerically, apart from scipy
    x = torch.linspace(abs(t), 200.0, 2_000_001, dtype=torch.float64)
    density = math.gamma(4) / (math.sqrt(7 * math.pi) * math.gamma(3.5)) * (1 + x**2 / 7) ** -4
    assert result.p_value == pytest.approx(2 * torch.trapezoid(density, x).item(), rel=1e-4)
    assert result.verdict() == "higher" and seed_interval(b, a).verdict() == "lower"
    assert seed_interval([1, 2, 3], [1.1, 1.9, 3.05]).verdict() == "no detectable difference"


def test_non_inferiority_reads_the_one_sided_bound_against_the_margin():
    dpo = [0.85, 0.82, 0.88, 0.84, 0.86, 0.83, 0.87, 0.85]
    close = [x - 0.01 for x in dpo]
    close[0] += 0.004  # some spread
    result = non_inferiority(dpo, close, margin=0.07)
    assert result["verdict"] == "non-inferior" and -0.07 < result["bound"] < result["mean"] < 0
    one_sided = seed_interval(dpo, close, confidence=0.90)
    assert result["bound"] == pytest.approx(one_sided.low)  # the one-sided 95% bound
    far = [x - 0.1 for x in dpo]
    far[0] += 0.004
    assert non_inferiority(dpo, far, margin=0.07)["verdict"] == "not shown non-inferior"
    # lower is better (offensiveness): the upper bound must stay below +margin
    worse = [x + 0.01 for x in dpo]
    worse[0] += 0.004
    assert non_inferiority(dpo, worse, margin=0.0055, higher_is_better=False)["verdict"] == "not shown non-inferior"
    assert non_inferiority(dpo, worse, margin=0.05, higher_is_better=False)["verdict"] == "non-inferior"
    with pytest.raises(ValueError, match="`margin` must be > 0"):
        non_inferiority(dpo, close, margin=0)


def test_holm_step_down():
    # p-values 0.01, 0.04, 0.03, 0.005: sorted 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        holm([0.1, 1.2])


def test_two_level_bootstrap_widens_with_seed_spread_and_centres_on_the_mean():
    generator = torch.Generator().manual_seed(0)
    units = 40
    hard = torch.rand(units, generator=generator)  # the same units for every seed (crossed design)

    def arms(seed_spread):
        a, b = [], []
        for _ in range(8):
            shift = 0.05 + seed_spread * torch.randn(1, generator=generator).item()
            a.append(hard)
            b.append(hard + shift + 0.05 * torch.randn(units, generator=generator))
        return a, b

    tight, wide = two_level_bootstrap(*arms(0.0)), two_level_bootstrap(*arms(0.1))
    assert tight["low"] > 0 and tight["verdict"] == "higher"
    assert (wide["high"] - wide["low"]) > 3 * (tight["high"] - tight["low"])  # seed variance enters the interval
    a, b = arms(0.0)
    expected = sum((y.mean() - x.mean()).item() for x, y in zip(a, b, strict=True)) / 8
    result = two_level_bootstrap(a, b)
    assert result["mean"] == pytest.approx(expected)
    assert result["low"] < result["low_one_sided"] < result["mean"] < result["high_one_sided"] < result["high"]
    with pytest.raises(ValueError, match="the same units"):
        two_level_bootstrap(a, [b[0], b[1][:-1], *b[2:]])


def test_two_level_bootstrap_keeps_the_units_sampling_error_when_every_seed_is_alike():
    """Eight identical seeds carry one seed's information: the interval must be as wide as that seed's own paired
    bootstrap over its units (a separate unit draw per seed would shrink it by about sqrt(8))."""
    from trl_decpo.evaluation.stats import paired_bootstrap, weighted_mean

    generator = torch.Generator().manual_seed(1)
    a = torch.rand(50, generator=generator)
    b = a + 0.1 * torch.randn(50, generator=generator)
    crossed = two_level_bootstrap([a] * 8, [b] * 8, num_resamples=4000)
    single = paired_bootstrap(weighted_mean, a, b, num_resamples=4000)
    assert crossed["high"] - crossed["low"] == pytest.approx(single.high - single.low, rel=0.1)


def test_seed_bootstrap_resamples_the_seeds():
    from trl_decpo.evaluation.seeds import seed_bootstrap

    a, b = [0.0] * 8, [0.1, 0.12, 0.08, 0.11, 0.09, 0.1, 0.13, 0.07]
    result = seed_bootstrap(a, b)
    assert result["mean"] == pytest.approx(0.1) and 0.07 <= result["low"] < 0.1 < result["high"] <= 0.13
    assert seed_bootstrap(a, a)["verdict"] == "no detectable difference"


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([1.0], [2.0], "at least 2 seeds"),
        ([1.0, 2.0], [1.0], "the same length"),
        ([1.0, float("nan")], [1, 2], "non-finite"),
    ],
)
def test_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        seed_interval(a, b)
