"""Numerical safety: degenerate and extreme activations never give NaN or inf.

Cases: constant activations, all-zero rows, a single row, and huge activations in fp16 / bf16, for the penalty (value
and gradient, every option) and for the proxies (FD, sparsity, the streaming accumulator); then a DecPO training step
on a model whose hooked activations are forced to such values. The eps handling is documented in
`trl_decpo/penalty/decorrelation.py` and docs/reliability.md ("Numerical safety").
"""

import itertools
import math

import pytest
import torch

from tests.helpers import brute_fd, decpo_config, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOConfig, DecPOTrainer
from trl_decpo.capture import RowIndex
from trl_decpo.monosemanticity.proxies import ProxyAccumulator, activation_sparsity, feature_decorrelation
from trl_decpo.penalty import decorrelation_penalty


OPTIONS = list(itertools.product([True, False], ["sum", "mean"], ["samples", "features"]))
FP16_MAX = torch.finfo(torch.float16).max
BF16_HUGE = 1e30  # bf16 has float32's range: squares of such values overflow float32


def degenerate(name: str, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(0)
    if name == "constant":
        return torch.full((6, 16), 0.75, dtype=dtype)
    if name == "zeros":
        return torch.zeros(6, 16, dtype=dtype)
    if name == "some_zero_rows":
        z = torch.randn(6, 16)
        z[[1, 4]] = 0.0
        return z.to(dtype)
    if name == "single_row":
        return torch.randn(1, 16, dtype=dtype)
    if name == "fp16_huge":
        return (torch.randn(6, 16).sign() * FP16_MAX).to(torch.float16)
    if name == "bf16_huge":
        return (torch.randn(6, 16) * BF16_HUGE).to(torch.bfloat16)
    raise KeyError(name)


CASES = ["constant", "zeros", "some_zero_rows", "single_row", "fp16_huge", "bf16_huge"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("normalize,reduction,target", [o for o in OPTIONS if o[0]])
def test_normalised_penalty_and_gradient_are_finite(case, normalize, reduction, target):
    z = degenerate(case).requires_grad_(True)
    value = decorrelation_penalty(z, normalize=normalize, reduction=reduction, target=target)
    value.backward()
    assert torch.isfinite(value), (case, value)
    assert torch.isfinite(z.grad.float()).all(), case


@pytest.mark.parametrize("case", ["fp16_huge", "bf16_huge"])
@pytest.mark.parametrize("target", ["samples", "features"])
def test_normalised_penalty_of_huge_activations_is_scale_free(case, target):
    """The cosine / correlation penalty of huge rows equals that of the same rows scaled down (no float32 overflow)."""
    z = degenerate(case)
    small = z.float() / z.float().abs().max()
    got = decorrelation_penalty(z, target=target, reduction="mean")
    want = decorrelation_penalty(small, target=target, reduction="mean")
    assert float(got) == pytest.approx(float(want), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("target", ["samples", "features"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_raw_mode_stays_finite_over_the_fp16_range(target, dtype):
    """`normalize=False` (the paper's formula read literally) is not scale-free: with activations as large as fp16's
    maximum its value and its gradient (which grows like |z|^3) stay finite in bf16 / float32. In fp16 that gradient
    overflows (documented in docs/reliability.md); the normalised modes above do not."""
    z = degenerate("fp16_huge").to(dtype).requires_grad_(True)
    value = decorrelation_penalty(z, normalize=False, reduction="mean", target=target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad.float()).all()


def test_degenerate_values_are_the_limits_the_docs_state():
    """Zero rows have no direction (cosine 0 with everything); constant features have zero correlation."""
    z = degenerate("some_zero_rows")
    nonzero = z[[0, 2, 3, 5]]
    # samples, sum: only pairs of non-zero rows contribute, and each zero row adds its (0 - 1)^2 diagonal term
    assert float(decorrelation_penalty(z, reduction="sum")) == pytest.approx(
        float(decorrelation_penalty(nonzero, reduction="sum")) + 2.0, rel=1e-5
    )
    # features: a constant column correlates with nothing, its diagonal is 0 -> it adds exactly 1 (sum)
    c = torch.randn(8, 5)
    with_constant = torch.cat([c, torch.full((8, 1), 3.0)], dim=1)
    assert float(decorrelation_penalty(with_constant, target="features", reduction="sum")) == pytest.approx(
        float(decorrelation_penalty(c, target="features", reduction="sum")) + 1.0, rel=1e-5
    )
    # one row: its cosine Gram is [[1]], no penalty
    assert float(decorrelation_penalty(degenerate("single_row"))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_proxies_are_finite(case):
    z = degenerate(case)
    acc = ProxyAccumulator()
    acc.update(z)
    acc.update(z[:1])
    values = [acc.activation_sparsity()] + ([acc.feature_decorrelation()] if acc.count >= 2 else [])
    values.append(activation_sparsity(z))
    if z.shape[0] >= 2:
        values.append(feature_decorrelation(z))
    assert all(math.isfinite(v) for v in values), (case, values)  # Python floats (float64)


@pytest.mark.parametrize("case", ["fp16_huge", "bf16_huge", "some_zero_rows"])
def test_fd_of_extreme_rows_matches_the_brute_force(case):
    z = degenerate(case)
    assert feature_decorrelation(z) == pytest.approx(brute_fd(z.double()), abs=1e-9)


def _force_rows(monkeypatch, fill):
    """The pooled rows become ``rows * 0 + fill``: degenerate activations for the penalty only (still on the graph),
    while the model's own forward stays as it is."""
    original = RowIndex.pool
    monkeypatch.setattr(RowIndex, "pool", lambda self, acts: original(self, acts) * 0.0 + fill)


def _trainer(tmp_path):
    return DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, decorrelation_layers=[1, 2], max_steps=1),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )


@pytest.mark.parametrize("fill", [0.0, 0.75, BF16_HUGE])
def test_training_step_with_degenerate_activations_stays_finite(tmp_path, monkeypatch, fill):
    """A DecPO step on all-zero, constant or huge rows: finite loss, penalty and weights."""
    trainer = _trainer(tmp_path)
    _force_rows(monkeypatch, fill)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "decorrelation/penalty" in h][0]
    assert math.isfinite(logged["loss"]) and math.isfinite(logged["decorrelation/penalty"])
    # identical rows: every cosine is 1 -> mean-reduced penalty (n^2 - n) / n^2 per layer; zero rows: n / n^2
    n = 8
    want = (n * n - n) / n**2 if fill else n / n**2
    assert logged["decorrelation/layer_1"] == pytest.approx(want, rel=1e-5)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("fill", [float("inf"), float("nan")])
def test_non_finite_activations_carry_on_as_dpo_with_a_warning(tmp_path, monkeypatch, caplog, fill):
    """Rows that are already inf/NaN (a diverged model): the run itself diverged, so DecPO does not stop where
    DPOTrainer would go on; it says so once."""
    trainer = _trainer(tmp_path)
    _force_rows(monkeypatch, fill)
    with caplog.at_level("WARNING"):
        trainer.train()
    assert trainer.state.global_step == 1
    assert "activations captured at layers [1, 2] became non-finite" in caplog.text
    logged = [h for h in trainer.state.log_history if "decorrelation/layer_1" in h][0]
    assert not math.isfinite(logged["decorrelation/layer_1"])


def test_penalty_that_goes_non_finite_first_stops_before_the_step(tmp_path, monkeypatch):
    """Finite activations and DPO loss, but a raw (`normalize=False`) Gram that overflows float32: the penalty is the
    first thing to go non-finite, so training stops before the optimizer step, naming the layers."""
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, decorrelation_layers=[1, 2], max_steps=1, decorrelation_normalize=False),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    _force_rows(monkeypatch, 1e30)  # finite in float32; its squares are not
    with pytest.raises(FloatingPointError, match=r"decorrelation penalty at layer 1, 2 is not finite.*DPO loss"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=False))


def test_a_diverging_fp16_run_goes_on_as_it_does_with_dpo(tmp_path, caplog):
    """fp16 weights and a learning rate of 0.1 on a tiny Qwen2: the run diverges (NaN gradients within a few steps).
    DPOTrainer runs to the end, and so does DecPOTrainer, with one warning instead of an error."""
    from trl import DPOConfig, DPOTrainer

    from tests.helpers import base_kwargs, model_path

    kwargs = {**base_kwargs(tmp_path), "max_steps": 8, "learning_rate": 0.1}
    kwargs["model_init_kwargs"] = {"dtype": torch.float16}
    trainers = {}
    for name, trainer_class, config_class in (("dpo", DPOTrainer, DPOConfig), ("decpo", DecPOTrainer, DecPOConfig)):
        args = config_class(**{**kwargs, "output_dir": str(tmp_path / name)})
        trainers[name] = trainer_class(
            model=model_path("qwen2"), args=args, train_dataset=make_dataset(16), processing_class=make_tokenizer()
        )
        with caplog.at_level("WARNING"):
            trainers[name].train()
    for trainer in trainers.values():
        assert trainer.state.global_step == 8
        norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
        assert any(not math.isfinite(n) for n in norms), "the run was meant to diverge"
    assert caplog.text.count("became non-finite (the run is diverging") == 1
