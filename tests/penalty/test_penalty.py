"""The penalty against independent computations written here, for every option."""

import itertools

import numpy as np
import pytest
import torch

from trl_decpo.penalty import decorrelation_penalty, gram_minus_identity_sq


def brute_force(z: torch.Tensor, normalize: bool, reduction: str, target: str) -> float:
    """Float64 numpy reference: build the full matrix, subtract the identity, square, sum."""
    x = z.detach().double().numpy()
    n, d = x.shape
    if target == "samples":
        u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) if normalize else x
        m = u @ u.T
        size = n
    else:
        if normalize:
            m = np.corrcoef(x, rowvar=False)  # Pearson correlation of the features (columns)
        else:
            m = x.T @ x
        size = d
    value = ((m - np.eye(size)) ** 2).sum()
    return value / size**2 if reduction == "mean" else value


OPTIONS = list(itertools.product([True, False], ["sum", "mean"], ["samples", "features"]))


@pytest.mark.parametrize("normalize,reduction,target", OPTIONS)
@pytest.mark.parametrize("shape", [(6, 10), (12, 5)])  # n < d and n > d exercise both Gram forms
def test_matches_brute_force(normalize, reduction, target, shape):
    torch.manual_seed(0)
    z = torch.randn(*shape) + 0.3 * torch.randn(1, shape[1])  # correlated rows
    got = decorrelation_penalty(z, normalize=normalize, reduction=reduction, target=target)
    want = brute_force(z, normalize, reduction, target)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_orthogonal_rows_give_zero_in_cosine_mode(reduction):
    z = torch.diag(torch.tensor([3.0, 0.5, 7.0, 2.0]))  # orthogonal rows of different norms
    z = torch.cat([z, torch.zeros(4, 3)], dim=1)
    assert decorrelation_penalty(z, normalize=True, reduction=reduction).item() == pytest.approx(0.0, abs=1e-7)
    # raw mode sees the norms: sum_i (||z_i||^2 - 1)^2
    raw = decorrelation_penalty(z, normalize=False, reduction="sum").item()
    assert raw == pytest.approx((9 - 1) ** 2 + (0.25 - 1) ** 2 + (49 - 1) ** 2 + (4 - 1) ** 2, rel=1e-6)


@pytest.mark.parametrize("n", [2, 5, 9])
def test_identical_rows_known_value(n):
    z = torch.tensor([[1.0, -2.0, 0.5, 4.0]]).repeat(n, 1)
    # every off-diagonal cosine is 1: n (n - 1) ones
    assert decorrelation_penalty(z, reduction="sum").item() == pytest.approx(n * (n - 1), rel=1e-6)
    assert decorrelation_penalty(z, reduction="mean").item() == pytest.approx((n - 1) / n, rel=1e-6)


def test_raw_mode_is_the_literal_formula():
    torch.manual_seed(1)
    z = torch.randn(7, 13, dtype=torch.float64)
    literal = torch.linalg.matrix_norm(z @ z.T - torch.eye(7, dtype=torch.float64), ord="fro") ** 2
    got = decorrelation_penalty(z, normalize=False, reduction="sum", target="samples")
    assert got.item() == pytest.approx(literal.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("normalize,reduction,target", OPTIONS)
def test_low_precision_inputs_computed_in_float32(dtype, normalize, reduction, target):
    torch.manual_seed(2)
    z = (torch.randn(8, 16) * 3).to(dtype)
    got = decorrelation_penalty(z, normalize=normalize, reduction=reduction, target=target)
    assert got.dtype == torch.float32
    # same value as the float32 computation on the same (upcast) numbers, and as the float64 brute force
    want32 = decorrelation_penalty(z.float(), normalize=normalize, reduction=reduction, target=target)
    assert got.item() == want32.item()
    assert got.item() == pytest.approx(brute_force(z.float(), normalize, reduction, target), rel=1e-4)


@pytest.mark.parametrize("a,b", [(5, 40), (40, 5), (7, 7)])
def test_gram_forms_agree(a, b):
    torch.manual_seed(3)
    x = torch.randn(a, b, dtype=torch.float64)
    small = gram_minus_identity_sq(x)
    full = ((x @ x.T - torch.eye(a, dtype=torch.float64)) ** 2).sum()
    assert small.item() == pytest.approx(full.item(), rel=1e-10)


def test_features_target_never_builds_d_by_d_when_d_exceeds_n(monkeypatch):
    shapes = []
    real_matmul = torch.Tensor.__matmul__

    def spy(self, other):
        out = real_matmul(self, other)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    z = torch.randn(4, 300)
    decorrelation_penalty(z, target="features")
    decorrelation_penalty(z, target="samples")
    assert shapes and all(max(s) <= 4 for s in shapes), shapes


@pytest.mark.parametrize("normalize,reduction,target", OPTIONS)
def test_gradient_matches_reference_autograd(normalize, reduction, target):
    torch.manual_seed(4)
    z = torch.randn(6, 9, dtype=torch.float32, requires_grad=True)
    decorrelation_penalty(z, normalize=normalize, reduction=reduction, target=target).backward()
    got = z.grad.clone()

    x = z.detach().double().requires_grad_(True)
    if target == "samples":
        u = x / x.norm(dim=1, keepdim=True) if normalize else x
        m, size = u @ u.T, 6
    else:
        if normalize:
            c = x - x.mean(0, keepdim=True)
            v = c / c.norm(dim=0, keepdim=True)
        else:
            v = x
        m, size = v.T @ v, 9
    ref = ((m - torch.eye(size, dtype=torch.float64)) ** 2).sum()
    (ref / size**2 if reduction == "mean" else ref).backward()
    assert torch.allclose(got.double(), x.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"reduction": "max"}, "reduction"),
        ({"target": "tokens"}, "target"),
        ({"normalize": "yes"}, "normalize"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decorrelation_penalty(torch.randn(3, 4), **kwargs)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        decorrelation_penalty(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        decorrelation_penalty(torch.randn(4))
    with pytest.raises(ValueError, match="at least one row"):
        decorrelation_penalty(torch.randn(0, 4))


@pytest.mark.parametrize("normalize,reduction,target", OPTIONS)
@pytest.mark.parametrize("n,d", [(5, 12), (12, 5)])
def test_batched_layers_equal_one_by_one(normalize, reduction, target, n, d):
    """A [k, n, d] batch (the rows of k layers) gives each matrix's penalty, values and gradients."""
    torch.manual_seed(n * d)
    z = torch.randn(3, n, d, requires_grad=True)
    batched = decorrelation_penalty(z, normalize=normalize, reduction=reduction, target=target)
    assert batched.shape == (3,)
    for k in range(3):
        assert float(batched[k].detach()) == pytest.approx(
            brute_force(z[k], normalize, reduction, target), rel=1e-4, abs=1e-5
        )
    (grad,) = torch.autograd.grad(batched.sum(), z)
    single = torch.stack(
        [
            torch.autograd.grad(
                decorrelation_penalty(z[k], normalize=normalize, reduction=reduction, target=target), z
            )[0][k]
            for k in range(3)
        ]
    )
    assert torch.allclose(grad, single, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("target", ["samples", "features"])
def test_never_allocates_a_d_by_d_matrix(target):
    """Forward and backward at n << d: no operation produces a tensor larger than the input (d x d is 250x larger)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    sizes = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes.extend(
                t.numel() for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)
            )
            return out

    n, d = 8, 2000
    z = torch.randn(n, d, requires_grad=True)
    with Record():
        decorrelation_penalty(z, normalize=True, reduction="mean", target=target).backward()
    assert max(sizes) <= n * d < d * d


@pytest.mark.parametrize("normalize,reduction,target", OPTIONS)
@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (2, 4, 6), (2, 6, 4)])  # both Gram forms, 2-D and batched
def test_analytic_gradient_against_finite_differences(normalize, reduction, target, shape):
    """The one-node analytic backward against float64 finite differences, first and second call on the same graph."""
    torch.manual_seed(sum(shape))
    z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: decorrelation_penalty(x, normalize=normalize, reduction=reduction, target=target), (z,)
    )


@pytest.mark.parametrize("target", ["samples", "features"])
def test_analytic_gradient_at_the_eps_floor(target):
    """A small non-zero row (``samples``) or a nearly constant column (``features``) below the eps floor, where the
    map is ``x / eps`` and not the normalisation: its gradient branch is checked against finite differences."""
    torch.manual_seed(0)
    z = torch.randn(6, 8, dtype=torch.float64)
    if target == "samples":
        z[2] = 1e-3 * torch.randn(8, dtype=torch.float64)  # norm ~3e-3 < eps
    else:
        z[:, 3] = 0.7 + 1e-4 * torch.randn(6, dtype=torch.float64)  # sqrt(n) * std ~2e-4 < eps * sqrt(n)
    z.requires_grad_(True)
    # eps well above gradcheck's 1e-6 perturbation, so the finite differences stay on one side of the floor
    assert torch.autograd.gradcheck(lambda x: decorrelation_penalty(x, target=target, eps=1e-2), (z,))


@pytest.mark.parametrize("target", ["samples", "features"])
@pytest.mark.parametrize("shape", [(4, 16), (16, 4)])
def test_under_autocast_values_and_gradients_match_float32(target, shape):
    """Inside `torch.autocast` (bf16) the penalty is still computed in float32, and its backward runs."""
    torch.manual_seed(1)
    z = torch.randn(*shape, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = decorrelation_penalty(z, target=target)
    value.backward()
    reference = z.detach().clone().requires_grad_(True)
    want = decorrelation_penalty(reference, target=target)
    want.backward()
    assert value.dtype == torch.float32 and float(value.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert torch.allclose(z.grad, reference.grad, rtol=1e-5, atol=1e-7)


def test_second_derivatives_are_refused_not_silently_zero():
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(decorrelation_penalty(z), z, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gradient_comes_back_in_the_input_dtype(dtype):
    z = torch.randn(4, 16).to(dtype).requires_grad_(True)
    decorrelation_penalty(z).backward()
    assert z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()
    reference = z.detach().float().requires_grad_(True)
    decorrelation_penalty(reference).backward()
    assert torch.allclose(z.grad.float(), reference.grad, rtol=2e-2, atol=1e-3)
