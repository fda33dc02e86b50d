# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
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
