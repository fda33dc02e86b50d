"""Monosemanticity proxies (pure math) against brute force written here."""

import numpy as np
import pytest
import torch

from tests.helpers import brute_fd, brute_sparsity
from trl_decpo import ProxyAccumulator, activation_sparsity, feature_decorrelation
from trl_decpo.monosemanticity.proxies import neuron_weight_scores, weight_proxy_change, weight_proxy_values


@pytest.mark.parametrize("n,d,shift", [(2, 3, 0.0), (7, 5, 0.0), (40, 16, 1.5), (25, 300, -0.7)])
def test_fd_equals_pairwise_brute_force(n, d, shift):
    torch.manual_seed(n * d)
    z = torch.randn(n, d) + shift  # a shift makes the mean cosine far from 0
    assert feature_decorrelation(z) == pytest.approx(brute_fd(z), abs=1e-5)
    assert activation_sparsity(z) == pytest.approx(brute_sparsity(z), abs=1e-6)


def test_fd_known_values():
    identical = torch.tensor([[1.0, 2.0, 3.0]] * 5)
    assert feature_decorrelation(identical) == pytest.approx(0.0, abs=1e-9)
    assert feature_decorrelation(torch.eye(6) * 3.0) == pytest.approx(1.0, abs=1e-9)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert feature_decorrelation(opposite) == pytest.approx(2.0, abs=1e-9)
    # scale of a row does not change FD, it does change sparsity
    z = torch.randn(6, 8)
    scaled = z * torch.arange(1, 7).unsqueeze(1)
    assert feature_decorrelation(scaled) == pytest.approx(feature_decorrelation(z), abs=1e-9)
    assert activation_sparsity(scaled) > activation_sparsity(z)


def test_zero_row_counts_as_prompt_with_zero_cosine():
    torch.manual_seed(1)
    z = torch.randn(6, 4) + 1.0
    z[2] = 0.0
    assert feature_decorrelation(z) == pytest.approx(brute_fd(z), abs=1e-6)


def test_half_precision_rows_are_accumulated_in_float64():
    torch.manual_seed(2)
    z = (torch.randn(30, 64) + 2.0).to(torch.bfloat16)
    assert feature_decorrelation(z) == pytest.approx(brute_fd(z.float()), abs=1e-5)


@pytest.mark.parametrize("splits", [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [3, 7], [9, 1], [4, 0, 6]])
def test_streaming_equals_one_shot(splits):
    torch.manual_seed(3)
    z = torch.randn(sum(splits), 12) + 0.5
    acc = ProxyAccumulator()
    for chunk in torch.split(z, splits):
        acc.update(chunk)
    assert acc.count == len(z)
    assert acc.feature_decorrelation() == pytest.approx(feature_decorrelation(z), abs=1e-12)
    assert acc.activation_sparsity() == pytest.approx(activation_sparsity(z), abs=1e-12)
    assert torch.allclose(acc.mean_abs_activation(), z.double().abs().mean(0))


def test_merge_and_state_round_trip_equal_one_shot():
    """Shards measured apart (as on several processes) and summed give the value of all rows together."""
    torch.manual_seed(4)
    z = torch.randn(20, 10) + 0.3
    a, b = ProxyAccumulator(), ProxyAccumulator()
    a.update(z[:8])
    b.update(z[8:])
    summed = {k: a.state()[k] + b.state()[k] for k in a.state()}
    for acc in (ProxyAccumulator.from_state(summed), ProxyAccumulator().merge(a).merge(b)):
        assert acc.count == 20
        assert acc.feature_decorrelation() == pytest.approx(brute_fd(z), abs=1e-6)
        assert acc.activation_sparsity() == pytest.approx(brute_sparsity(z), abs=1e-9)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 prompts"):
        feature_decorrelation(torch.randn(1, 4))
    with pytest.raises(ValueError, match="2-D"):
        feature_decorrelation(torch.randn(4))
    acc = ProxyAccumulator()
    acc.update(torch.randn(3, 4))
    with pytest.raises(ValueError, match="width 5"):
        acc.update(torch.randn(2, 5))
    with pytest.raises(ValueError, match="no rows"):
        ProxyAccumulator().state()


# ----------------------------------------------------------------------------------------------------------------------
# Weight proxy
# ----------------------------------------------------------------------------------------------------------------------


def test_neuron_scores_and_normalised_medians():
    torch.manual_seed(5)
    layers = [(torch.randn(9, 4), torch.randn(9)) for _ in range(3)]
    scores = [neuron_weight_scores(w, b) for w, b in layers]
    for (w, b), s in zip(layers, scores, strict=False):
        expected = [float(np.linalg.norm(w[j].numpy())) * float(b[j]) for j in range(9)]
        assert s.tolist() == pytest.approx(expected, rel=1e-6)
    medians = [sorted(s.tolist())[4] for s in scores]  # 9 neurons: the 5th smallest
    scale = max(
        sorted(abs(x) for x in s.tolist())[4] for s in scores
    )  # docs/method.md: max over layers of median |score|
    assert weight_proxy_values(scores) == pytest.approx([m / scale for m in medians])


def test_scale_is_the_median_of_absolute_scores_not_the_absolute_median():
    """Mixed signs: median([-5, -4, .5, 3, 4]) = .5 but median(|.|) = 4, so the values are [.5/4, 1/4]."""
    w = torch.ones(5, 1)
    scores = [
        neuron_weight_scores(w, torch.tensor([-5.0, -4.0, 0.5, 3.0, 4.0])),
        neuron_weight_scores(w[:3], torch.tensor([1.0, 1.0, 1.0])),
    ]
    assert weight_proxy_values(scores) == pytest.approx([0.125, 0.25])


def test_median_of_an_even_count_is_the_mean_of_the_middle_pair():
    w, b = torch.ones(4, 1), torch.tensor([1.0, 2.0, 4.0, 10.0])
    scores = [neuron_weight_scores(w, b), neuron_weight_scores(w, -4 * b)]
    assert weight_proxy_values(scores) == pytest.approx([3.0 / 12.0, -1.0])


def test_weight_proxy_change_uses_the_most_changed_neurons():
    torch.manual_seed(6)
    w, b = torch.randn(10, 4), torch.rand(10) + 0.5
    tuned_w, tuned_b = w.clone(), b.clone()
    changed = [1, 4, 7]
    tuned_w[changed] += 3.0  # the three most changed input vectors
    tuned_w[0] += 0.01  # a small change that must not be picked
    tuned_b[changed] *= 2.0
    tuned_b[0] *= 100.0  # would move the median a lot if neuron 0 were picked
    base_scores = [float(np.linalg.norm(w[j].numpy()) * b[j]) for j in changed]
    tuned_scores = [float(np.linalg.norm(tuned_w[j].numpy()) * tuned_b[j]) for j in changed]
    expected = (np.median(tuned_scores) - np.median(base_scores)) / abs(np.median(base_scores))
    assert weight_proxy_change(w, b, tuned_w, tuned_b, top_k=3) == pytest.approx(expected, rel=1e-6)
    assert weight_proxy_change(w, b, w, b, top_k=3) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        weight_proxy_change(w, b, tuned_w[:5], tuned_b[:5])
