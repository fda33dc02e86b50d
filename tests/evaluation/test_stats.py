# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
import math

import pytest
import torch

from trl_decpo.evaluation.stats import NO_DIFFERENCE, bootstrap_weights, paired_bootstrap, weighted_mean


def test_weights_are_draw_counts():
    weights = bootstrap_weights(7, 50, seed=3)
    assert weights.shape == (50, 7)
    assert torch.all(weights.sum(1) == 7)
    assert torch.all(weights == weights.round()) and weights.min() >= 0
    assert torch.equal(weights, bootstrap_weights(7, 50, seed=3))
    assert not torch.equal(weights, bootstrap_weights(7, 50, seed=4))


def test_weighted_mean_matches_the_resampled_mean():
    values = torch.randn(9, dtype=torch.float64)
    weights = bootstrap_weights(9, 20, seed=0)
    for row, mean in zip(weights, weighted_mean(values, weights), strict=False):
        resampled = torch.repeat_interleave(values, row.long())
        assert mean.item() == pytest.approx(resampled.mean().item())


def test_pairing_removes_between_unit_spread():
    # Units differ a lot from each other, arm b is arm a plus a small constant: only a paired interval sees it.
    a = torch.linspace(-10, 10, 30, dtype=torch.float64)
    result = paired_bootstrap(weighted_mean, a, a + 0.01 + 0.001 * torch.cos(torch.arange(30.0)))
    assert result.difference == pytest.approx(0.01 + 0.001 * torch.cos(torch.arange(30.0)).mean().item())
    assert 0 < result.low <= result.difference <= result.high
    assert result.verdict() == "higher" and result.verdict("better", "worse") == "better"


def test_no_difference_when_the_interval_covers_zero():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(40, generator=generator, dtype=torch.float64)
    b = a + torch.randn(40, generator=generator, dtype=torch.float64)  # noise around no shift
    result = paired_bootstrap(weighted_mean, a, b, seed=1)
    assert result.low < 0 < result.high
    assert result.verdict() == NO_DIFFERENCE
    assert result.to_dict()["verdict"] == NO_DIFFERENCE
    lower = paired_bootstrap(weighted_mean, a, a - 1)
    assert lower.verdict() == "lower" and lower.high == pytest.approx(-1)


def test_interval_narrows_with_confidence():
    a = torch.randn(25, dtype=torch.float64)
    b = a + 0.3 * torch.randn(25, dtype=torch.float64)
    wide = paired_bootstrap(weighted_mean, a, b, confidence=0.99)
    narrow = paired_bootstrap(weighted_mean, a, b, confidence=0.5)
    assert wide.low < narrow.low <= narrow.high < wide.high


@pytest.mark.parametrize(
    "kwargs, message",
    [({"confidence": 1.0}, "confidence"), ({"num_resamples": 0}, "num_resamples")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(weighted_mean, torch.zeros(3), torch.zeros(3), **kwargs)
    with pytest.raises(ValueError, match="same units"):
        paired_bootstrap(weighted_mean, torch.zeros(3), torch.zeros(4))


def test_resamples_on_which_a_pairwise_statistic_is_undefined_are_left_out():
    """FD needs two distinct probes: with 3 probes about 1 resample in 9 draws a single one; those are left out (the
    interval stays finite) and counted out of `num_resamples`; with 2 probes half are undefined (more than 20%): refused."""
    from trl_decpo.monosemanticity import weighted_feature_decorrelation

    torch.manual_seed(0)
    rows_a, rows_b = torch.randn(3, 8), torch.randn(3, 8)
    gram = lambda z: torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).T  # noqa: E731
    result = paired_bootstrap(weighted_feature_decorrelation, gram(rows_a), gram(rows_b), num_resamples=900, seed=3)
    single = int(((bootstrap_weights(3, 900, seed=3) > 0).sum(1) == 1).sum())
    assert single > 0 and result.num_resamples == 900 - single
    assert math.isfinite(result.low) and math.isfinite(result.high) and result.low <= result.high
    with pytest.raises(ValueError, match="too few units for an interval"):
        paired_bootstrap(weighted_feature_decorrelation, gram(rows_a[:2]), gram(rows_b[:2]), num_resamples=900)
