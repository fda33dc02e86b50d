"""FD's control, the participation ratio and the weighted (bootstrap) statistics against brute force written here."""

import pytest
import torch

from tests.helpers import brute_control, brute_fd, brute_participation_ratio, brute_sparsity, cos
from trl_decpo import ProxyAccumulator, feature_decorrelation
from trl_decpo.evaluation.stats import bootstrap_weights, paired_bootstrap, weighted_mean
from trl_decpo.monosemanticity.proxies import (
    decorrelation_control,
    participation_ratio,
    weighted_control,
    weighted_feature_decorrelation,
)


def resampled_brute(z: torch.Tensor, counts: torch.Tensor, squared_centred: bool) -> float:
    """The statistic on the explicitly resampled rows, over pairs of copies of *distinct* original rows."""
    x = z.double()
    copies = [(i, x[i]) for i in range(len(x)) for _ in range(int(counts[i]))]
    mean = torch.stack([row for _, row in copies]).mean(0)
    total, pairs = 0.0, 0
    for p, (i, a) in enumerate(copies):
        for q, (j, b) in enumerate(copies):
            if p != q and i != j:
                total += cos(a - mean, b - mean) ** 2 if squared_centred else cos(a, b)
                pairs += 1
    return 1.0 - total / pairs


@pytest.mark.parametrize("n,d,shift", [(2, 3, 0.0), (3, 4, 1.0), (9, 5, 2.0), (30, 16, -1.5), (40, 6, 0.5)])
def test_control_and_participation_ratio_equal_brute_force(n, d, shift):
    torch.manual_seed(n + d)
    z = torch.randn(n, d) @ torch.randn(d, d) + shift  # correlated features, a shared offset
    assert decorrelation_control(z) == pytest.approx(brute_control(z), abs=1e-10)
    assert participation_ratio(z) == pytest.approx(brute_participation_ratio(z), rel=1e-9)


def test_a_row_equal_to_the_mean_has_no_direction():
    torch.manual_seed(0)
    m, a, b = (torch.randn(5, dtype=torch.float64) for _ in range(3))
    z = torch.stack([m + a, m - a, m, m + b, m - b])  # row 2 equals the mean row
    assert bool(torch.allclose(z[2], z.mean(0)))
    assert decorrelation_control(z) == pytest.approx(brute_control(z), abs=1e-10)
    same = torch.ones(4, 3)
    assert decorrelation_control(same) == 1.0  # no centred row has a direction: every cos^2 is 0
    assert participation_ratio(same) != participation_ratio(same)  # NaN: no variance at all


def test_a_shared_direction_moves_fd_but_not_the_control():
    """FD rises as a direction common to all rows shrinks; the control does not see it (the point of the control)."""
    torch.manual_seed(1)
    z = torch.randn(50, 32, dtype=torch.float64)
    shared = torch.randn(32, dtype=torch.float64)
    strong, weak = z + 3.0 * shared, z + 0.5 * shared
    assert feature_decorrelation(weak) > feature_decorrelation(strong) + 0.3
    assert decorrelation_control(weak) == pytest.approx(decorrelation_control(strong), abs=1e-12)
    assert participation_ratio(weak) == pytest.approx(participation_ratio(strong), rel=1e-12)


def test_centred_fd_is_no_control_but_the_control_separates_correlated_features():
    """FD of centred rows sits near N / (N - 1) whatever the features do; the control tells them apart."""
    torch.manual_seed(2)
    n, d = 60, 40
    independent = torch.randn(n, d, dtype=torch.float64)
    low_rank = torch.randn(n, 2, dtype=torch.float64) @ torch.randn(2, d, dtype=torch.float64)
    low_rank += 0.05 * torch.randn(n, d, dtype=torch.float64)
    for z in (independent, low_rank):
        assert feature_decorrelation(z - z.mean(0)) == pytest.approx(n / (n - 1), abs=0.02)
    assert decorrelation_control(independent) > 0.9 > 0.6 > decorrelation_control(low_rank)
    assert participation_ratio(independent) > 10 * participation_ratio(low_rank)


def test_weighted_statistics_with_all_ones_equal_the_unweighted_values():
    torch.manual_seed(3)
    z = torch.randn(12, 7) + 0.8
    z[4] = 0.0  # a zero row: cosine 0 in FD, as feature_decorrelation counts it
    gram = z.double() @ z.double().T
    ones = torch.ones(3, 12)
    assert weighted_feature_decorrelation(gram, ones).tolist() == pytest.approx([brute_fd(z)] * 3, abs=1e-12)
    assert weighted_control(gram, ones).tolist() == pytest.approx([brute_control(z)] * 3, abs=1e-10)
    assert float(weighted_control(gram, torch.ones(12))[0]) == pytest.approx(decorrelation_control(z), abs=1e-10)


@pytest.mark.parametrize("chunk", [1 << 24, 200])  # 200 numbers: one resample at a time
def test_weighted_statistics_equal_brute_force_on_resampled_rows(chunk):
    torch.manual_seed(4)
    z = torch.randn(9, 5) @ torch.randn(5, 5) + 1.2
    gram = z.double() @ z.double().T
    weights = bootstrap_weights(9, 6, seed=7)
    assert bool((weights > 1).any()) and bool((weights == 0).any())  # duplicates and left-out rows are exercised
    fd = weighted_feature_decorrelation(gram, weights)
    control = weighted_control(gram, weights, chunk_elements=chunk)
    for r, counts in enumerate(weights):
        assert float(fd[r]) == pytest.approx(resampled_brute(z, counts, squared_centred=False), abs=1e-10)
        assert float(control[r]) == pytest.approx(resampled_brute(z, counts, squared_centred=True), abs=1e-10)


def test_weighted_statistics_run_in_the_paired_bootstrap():
    torch.manual_seed(5)
    a = torch.randn(20, 8, dtype=torch.float64) + 1.0
    b = a + 0.3 * torch.randn(20, 8, dtype=torch.float64)
    grams = [x @ x.T for x in (a, b)]
    result = paired_bootstrap(weighted_control, *grams, num_resamples=50)
    assert result.a == pytest.approx(decorrelation_control(a)) and result.b == pytest.approx(decorrelation_control(b))
    assert result.low <= result.difference <= result.high
    fd = paired_bootstrap(weighted_feature_decorrelation, *grams, num_resamples=50)
    assert fd.a == pytest.approx(feature_decorrelation(a))


def test_weighted_statistics_errors():
    gram = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`weights` must be \[R, N\] with N = 4"):
        weighted_control(gram, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"`gram` must be the \[N, N\] Gram"):
        weighted_feature_decorrelation(torch.ones(4, 3), torch.ones(1, 4))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_control(gram, -torch.ones(1, 4))


def test_accumulator_keeps_rows_in_prompt_order():
    torch.manual_seed(6)
    z = torch.randn(10, 6) + 0.4
    acc = ProxyAccumulator(keep_rows=True)
    order = torch.randperm(10)
    for chunk in order.split([3, 4, 3]):  # batches arrive out of prompt order (sorted by length), with their indices
        acc.update(z[chunk], chunk)
    assert torch.equal(acc.rows(), z)
    assert torch.allclose(acc.gram(), z.double() @ z.double().T)
    assert acc.control() == pytest.approx(brute_control(z), abs=1e-10)
    assert acc.participation_ratio() == pytest.approx(brute_participation_ratio(z), rel=1e-9)
    assert acc.row_sparsity().tolist() == pytest.approx([brute_sparsity(row[None]) for row in z], rel=1e-9)
    assert float(weighted_mean(acc.row_sparsity(), torch.ones(1, 10, dtype=torch.float64))[0]) == pytest.approx(
        acc.activation_sparsity()
    )
    # bfloat16 rows are kept exactly (as float32)
    half = ProxyAccumulator(keep_rows=True)
    half.update(z.to(torch.bfloat16))
    assert half.rows().dtype == torch.float32 and torch.equal(half.rows(), z.to(torch.bfloat16).float())


def test_accumulator_rows_merge_and_state_round_trip():
    torch.manual_seed(7)
    z = torch.randn(8, 5)
    a, b = ProxyAccumulator(keep_rows=True), ProxyAccumulator(keep_rows=True)
    a.update(z[1::2], torch.arange(1, 8, 2))
    b.update(z[::2], torch.arange(0, 8, 2))
    merged = ProxyAccumulator().merge(a).merge(b)
    assert torch.equal(merged.rows(), z) and merged.feature_decorrelation() == pytest.approx(brute_fd(z))
    summed = {k: a.state()[k] + b.state()[k] for k in a.state()}
    restored = ProxyAccumulator.from_state(summed, rows=z)
    assert restored.control() == pytest.approx(brute_control(z), abs=1e-10)
    with pytest.raises(ValueError, match="holds 7 rows but the state counts 8"):
        ProxyAccumulator.from_state(summed, rows=z[:7])
    with pytest.raises(ValueError, match="keep_rows=True"):
        ProxyAccumulator.from_state(summed).rows()
    with pytest.raises(ValueError, match="without rows into one that keeps them"):
        a.merge(ProxyAccumulator.from_state(summed))
    twice = ProxyAccumulator(keep_rows=True)
    twice.update(z[:2], torch.tensor([0, 1]))
    twice.update(z[2:4], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="same prompt index"):
        twice.rows()
