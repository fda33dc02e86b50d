"""The SAE instrument: what `sae_report` says of a hand-built dictionary (exact values), and a TopK SAE trained with
SAELens recovering a planted sparse dictionary, saved and loaded in SAELens' format."""

import pytest
import torch

from trl_decpo.independent.sae import SAEReport, sae_report


class Dictionary:
    """An SAE-like object with a given decoder `W_dec` [F, d] whose `encode` inverts it exactly (no `decode`: the
    reconstruction is `codes @ W_dec`)."""

    def __init__(self, w_dec):
        self.W_dec = w_dec

    def encode(self, x):
        return x @ torch.linalg.pinv(self.W_dec)


def test_one_feature_per_neuron_counts_one_and_an_even_mix_counts_two():
    w_dec = torch.eye(3, dtype=torch.float64)
    w_dec[2] = torch.tensor([0.0, 0.0, 1.0])
    codes = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [2.0, 0.0, 2.0]], dtype=torch.float64)
    report = sae_report(Dictionary(w_dec), codes)
    assert report.neuron_features[0] == pytest.approx(1.0) and report.neuron_features[2] == pytest.approx(1.0)
    assert report.neuron_features[1] != report.neuron_features[1]  # no feature writes to neuron 1: NaN, left out
    assert report.mean_neuron_features == pytest.approx(1.0)
    assert report.explained_variance == pytest.approx(1.0) and report.l0 == pytest.approx(6 / 4)
    assert report.dead_fraction == pytest.approx(1 / 3)  # feature 1 never fires

    mixed = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # neuron 1 gets features 0 and 1 alike
    report = sae_report(Dictionary(mixed), torch.tensor([[1.0, 2.0], [2.0, 3.0]], dtype=torch.float64) @ mixed)
    assert report.neuron_features[0] == pytest.approx(1.0)
    mean_abs = torch.tensor([1.5, 2.5])  # the codes' mean |activation| per feature
    contributions = mean_abs * mixed[:, 1]
    assert report.neuron_features[1] == pytest.approx((contributions.sum() ** 2 / contributions.pow(2).sum()).item())


def test_reconstruction_error_lowers_explained_variance():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Half(Dictionary):
        def encode(self, x):
            return 0.5 * x

    report = sae_report(Half(torch.eye(4, dtype=torch.float64)), x)
    expected = 1 - (0.5 * x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert report.explained_variance == pytest.approx(expected.item())
    assert isinstance(report, SAEReport) and report.num_rows == 200


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="`activations` must be a 2-D tensor"):
        sae_report(Dictionary(torch.eye(3)), torch.zeros(3))
    with pytest.raises(ValueError, match="the SAE's `W_dec` has shape \\(3, 3\\); the activations have width 4"):
        sae_report(Dictionary(torch.eye(3)), torch.zeros(5, 4))


def planted_dictionary(num_features=48, d=32, rows=20000, active=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(num_features, d, generator=generator), dim=1)
    codes = torch.zeros(rows, num_features)
    chosen = torch.stack([torch.randperm(num_features, generator=generator)[:active] for _ in range(rows)])
    codes.scatter_(1, chosen, 1 + torch.rand(rows, active, generator=generator))
    return codes @ directions, directions


def test_a_trained_sae_recovers_a_planted_dictionary_and_round_trips_in_saelens_format(tmp_path):
    pytest.importorskip("sae_lens")
    from trl_decpo.independent.sae import load_sae, train_sae

    x, directions = planted_dictionary()
    state = torch.random.get_rng_state()
    sae = train_sae(x, 64, k=3, steps=1500, lr=3e-3, output_dir=str(tmp_path / "sae"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is untouched
    decoder = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    best = (directions @ decoder.T).abs().max(dim=1).values  # each planted direction's closest feature
    assert (best > 0.9).float().mean() >= 0.8
    report = sae_report(sae, x)
    assert report.explained_variance > 0.8 and report.l0 == pytest.approx(3.0)
    loaded = load_sae(str(tmp_path / "sae"))
    assert (tmp_path / "sae" / "cfg.json").is_file() and torch.equal(loaded.W_dec, sae.W_dec)
    assert torch.equal(loaded.encode(x[:8]), sae.encode(x[:8]))
    annealed = train_sae(x[:2000], 16, k=2, steps=20, lr_end=1e-5)  # cosine-annealed to lr_end (SAELens' scheduler)
    assert annealed.W_dec.shape == (16, 32)
    with pytest.raises(ValueError, match="`k` \\(20\\) must be at most `num_features` \\(16\\)"):
        train_sae(x, 16, k=20)
