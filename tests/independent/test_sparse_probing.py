"""k-sparse probing on planted ground truth: a concept one neuron carries, the same data in a rotated basis, a
multi-class concept, and bad input."""

import pytest
import torch

from trl_decpo.independent.sparse_probing import anova_f, sparse_probing, stratified_split


def planted(n=400, d=32, neuron=5, seed=0, strength=2.0):
    """Binary labels carried by one neuron (its mean shifts by `strength` standard deviations), the rest noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    x = torch.randn(n, d, generator=generator)
    x[:, neuron] += strength * labels
    return x, labels


def random_rotation(d, seed=1):
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q * torch.sign(torch.diagonal(r))


def test_a_concept_one_neuron_carries_is_found_at_k_1():
    x, labels = planted()
    result = sparse_probing(x, labels, ks=(1, 4))
    assert result.neurons[1] == [5]
    assert result.accuracy[None] > 0.75  # separable well above chance (0.5)
    assert result.gap(1) < 0.05  # k = 1 is as good as the dense probe
    assert result.num_train + result.num_test == 400 and abs(result.chance - 0.5) < 0.1
    assert len(result.test_index) == result.num_test == len(result.correct[1])
    assert sum(result.correct[1]) / result.num_test == pytest.approx(result.accuracy[1])  # per held-out row


def test_the_same_data_rotated_needs_many_neurons():
    x, labels = planted()
    plain = sparse_probing(x, labels)
    rotated = sparse_probing(x @ random_rotation(32), labels)
    assert abs(rotated.accuracy[None] - plain.accuracy[None]) < 0.05  # the dense probe does not see the basis
    assert rotated.accuracy[1] < plain.accuracy[1] - 0.1  # the best single neuron does
    assert rotated.gap(1) > 0.1 and rotated.accuracy[16] > rotated.accuracy[1]


def test_multi_class_labels_of_any_type():
    generator = torch.Generator().manual_seed(0)
    n, d = 600, 24
    names = ["cat", "dog", "fish"]
    y = torch.randint(0, 3, (n,), generator=generator)
    x = torch.randn(n, d, generator=generator)
    for c, neuron in enumerate((2, 7, 11)):
        x[:, neuron] += 3.0 * (y == c)
    result = sparse_probing(x, [names[i] for i in y.tolist()], ks=(1, 3))
    assert result.classes == names
    assert set(result.neurons[3]) == {2, 7, 11}
    assert result.accuracy[3] > 0.85 and result.accuracy[3] > result.accuracy[1] + 0.15
    assert abs(result.accuracy[3] - result.accuracy[None]) < 0.05
    assert set(result.to_dict()["accuracy"]) == {"1", "3", "dense"}


def test_the_split_is_stratified_seeded_and_disjoint():
    y = torch.tensor([0] * 10 + [1] * 30)
    train, test = stratified_split(y, 0.3, seed=0)
    assert set(train.tolist()).isdisjoint(test.tolist()) and len(train) + len(test) == 40
    assert (y[test] == 0).sum() == 3 and (y[test] == 1).sum() == 9
    assert torch.equal(stratified_split(y, 0.3, seed=0)[1], test)
    assert not torch.equal(stratified_split(y, 0.3, seed=1)[1], test)


def test_the_ranking_is_the_anova_f_and_scale_free():
    x, labels = planted(n=200, d=6)
    f = anova_f(x, labels)
    # two classes: F is the square of the pooled two-sample t statistic
    a, b = x[labels == 1, 5].double(), x[labels == 0, 5].double()
    pooled = ((a - a.mean()).pow(2).sum() + (b - b.mean()).pow(2).sum()) / (len(a) + len(b) - 2)
    t = (a.mean() - b.mean()) / (pooled * (1 / len(a) + 1 / len(b))).sqrt()
    assert f[5].item() == pytest.approx(t.item() ** 2, rel=1e-9)
    x = x.double()
    scaled = x.clone()
    scaled[:, 0] *= 1000.0
    assert torch.allclose(anova_f(scaled, labels), anova_f(x, labels), rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activations": torch.zeros(10)}, "`activations` must be a 2-D tensor"),
        ({"labels": [0] * 20}, "`labels` needs at least 2 classes"),
        ({"labels": [0, 1] * 5}, "`labels` has 10 entries for 20 rows"),
        ({"ks": (0,)}, r"`ks` entries must be integers in \[1, 4\]"),
        ({"ks": (5,)}, r"`ks` entries must be integers in \[1, 4\]"),
        ({"test_fraction": 1.0}, r"`test_fraction` must be in \(0, 1\)"),
        ({"labels": ["x"] * 19 + ["rare"]}, r"`labels` 'rare' \(1 row\): each class needs 2 or more rows"),
    ],
)
def test_bad_input_names_the_field(kwargs, message):
    arguments = {"activations": torch.randn(20, 4), "labels": [0, 1] * 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        sparse_probing(**arguments)
