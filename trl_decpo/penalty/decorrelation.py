# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The DecPO decorrelation penalty: pure tensor math, no hooks, no Trainer.

Yan et al. (arXiv 2406.17969) add ``lambda * ||z z^T - I||_F^2`` to the DPO loss. ``z`` is an ``[n, d]`` matrix of
activations, one row per input (``docs/method.md`` defines the choices the paper leaves open). Two
targets are offered:

``samples`` (the paper)
    ``M = U U^T`` (``n x n``), where ``U`` is ``z`` with L2-normalised rows (``normalize=True``: ``M`` is the cosine
    Gram and the penalty is ``sum_{i != j} cos(z_i, z_j)^2``) or ``z`` itself (``normalize=False``: the formula read
    literally, which also pulls every ``||z_i||^2`` towards 1).
``features`` (Barlow Twins / VICReg style)
    ``M = V^T V`` (``d x d``), where ``V`` is ``z`` with every column centred and scaled to unit variance over the
    rows, divided by ``sqrt(n)`` (``normalize=True``: ``M`` is the Pearson correlation matrix of the features, with a
    unit diagonal, so the penalty is the sum of squared off-diagonal correlations) or ``z`` itself
    (``normalize=False``).

The penalty is ``||M - I||_F^2`` (``reduction="sum"``) or that divided by the number of entries of ``M``
(``reduction="mean"``: in cosine mode a value in [0, 1], the mean squared off-diagonal cosine times ``(n-1)/n``,
so it still grows slightly with the number of rows).

Cost: the penalty is always computed from the smaller of the two Gram matrices (:mod:`.gram`), in float32 whatever
the input dtype (float64 inputs stay float64); the gradient, returned in the input's dtype, is computed analytically
in one autograd node (``_Penalty``).

Numerical safety: rows (``samples``) or columns (``features``) whose norm (or ``sqrt(n) * std``) is at most ``eps``
(``eps * sqrt(n)``) are divided by that floor instead of by their norm, so all-zero rows and constant features stay
zero vectors and give a finite penalty and gradient: a zero row has cosine 0 with every row (its diagonal entry
contributes ``(0 - 1)^2``), a constant feature correlates with nothing. A single row gives 0 (``samples``). Norms are
accumulated in float64, so huge bf16 activations normalise correctly (the normalised penalties are scale-free);
``normalize=False`` is not scale-free: its float32 value overflows once ``d |z|^2`` exceeds about 1.8e19 (``|z|``
about 4e7 for d = 11008), which ``DecPOTrainer`` reports as an error instead of training on
(``tests/mixin/test_numerics.py``). Normalised penalties stay exact up to ``|z|`` about ``3e38 / sqrt(d)``.
"""

from __future__ import annotations

import torch

from ..utils import check_choice
from .gram import gram_terms


NORMALIZE_CHOICES = (True, False)
REDUCTION_CHOICES = ("sum", "mean")
TARGET_CHOICES = ("samples", "features")

# Guards the divisions by a row norm (``samples``) or a feature standard deviation (``features``).
DEFAULT_EPS = 1e-6


def _validate(z: torch.Tensor, normalize, reduction: str, target: str) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() not in (2, 3):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"`z` must be a 2-D tensor of shape [n, d] (or a batch [k, n, d]), got {shape}")
    if z.shape[-2] == 0 or z.shape[-1] == 0:
        raise ValueError(f"`z` must have at least one row and one column, got shape {tuple(z.shape)}")
    check_choice("normalize", normalize, NORMALIZE_CHOICES)
    check_choice("reduction", reduction, REDUCTION_CHOICES)
    check_choice("target", target, TARGET_CHOICES)


def _norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm along ``dim`` (kept), accumulated in float64 where the device has it: squares of bf16-range activations
    (> 1.8e19) would overflow float32 and turn every such row into a zero vector."""
    wide = None if x.device.type == "mps" else torch.float64  # MPS has no float64
    return torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=wide).to(x.dtype)


class _Penalty(torch.autograd.Function):
    """The penalty of an ``[n, d]`` matrix (or a ``[k, n, d]`` batch) as ONE autograd node with an analytic backward.

    Built from autograd ops, the penalty adds about ten small nodes per call to the graph; on small models their
    dispatch cost is a visible share of a training step (``benchmarks/step_time.py``). The gradient is exact:
    ``d||A A^T - I||^2 / dA = 4 (A A^T - I) A = 4 (A (A^T A) - A)``, taken from whichever Gram the forward built, then
    pulled back through the row normalisation or the column standardisation. ``tests/penalty/test_penalty.py`` checks
    it against float64 finite differences (``torch.autograd.gradcheck``) and against autograd of the explicit form.
    The forward runs with autocast off (its float32 tensors are reused by the backward).
    """

    @staticmethod
    def forward(ctx, z, normalize, target, eps, divisor):
        with torch.autocast(z.device.type, enabled=False):  # the backward reuses these tensors: one dtype throughout
            return _Penalty._forward(ctx, z, normalize, target, eps, divisor)

    @staticmethod
    def _forward(ctx, z, normalize, target, eps, divisor):
        x = z if z.dtype == torch.float64 else z.float()
        dim = -1 if target == "samples" else -2  # rows are normalised (samples), columns standardised (features)
        scale = mask = None
        if normalize:
            if target == "features":
                x = x - x.mean(dim=-2, keepdim=True)
            norm = _norm(x, dim)  # row norm, or sqrt(n) * std of a column
            floor = eps if target == "samples" else eps * max(x.shape[-2], 1) ** 0.5
            mask = norm > floor  # where the division is by the norm (elsewhere by the floor: a linear map)
            scale = norm.clamp_min(floor)
            x = x / scale
        value, gram, small_rows = gram_terms(x if target == "samples" else x.mT)
        ctx.save_for_backward(x, gram, scale, mask)
        ctx.options = (normalize, target, small_rows, divisor, z.dtype)
        return value / divisor if divisor != 1 else value

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: the analytic gradient would silently carry no graph
            raise RuntimeError(
                "decorrelation_penalty is differentiable once: its gradient cannot be differentiated "
                "again (backward with create_graph=True)"
            )
        x, gram, scale, mask = ctx.saved_tensors
        normalize, target, small_rows, divisor, dtype = ctx.options
        a = x if target == "samples" else x.mT
        coef = (grad.to(x.dtype) * (4.0 / divisor))[..., None, None]
        if small_rows:
            grad_a = coef * (gram @ a)  # 4 (A A^T - I) A
        else:
            grad_a = coef * (a @ gram - a)  # 4 (A (A^T A) - A)
        grad_x = grad_a if target == "samples" else grad_a.mT
        if normalize:  # x / max(|x|, floor) along dim: remove the radial part, divide by the scale
            dim = -1 if target == "samples" else -2
            radial = (grad_x * x).sum(dim=dim, keepdim=True) * mask
            grad_x = (grad_x - x * radial) / scale
            if target == "features":  # through the centring
                grad_x = grad_x - grad_x.mean(dim=-2, keepdim=True)
        return grad_x.to(dtype), None, None, None, None


def decorrelation_penalty(
    z: torch.Tensor,
    normalize: bool = True,
    reduction: str = "sum",
    target: str = "samples",
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """The DecPO penalty ``||M - I||_F^2`` of an ``[n, d]`` activation matrix (see the module docstring).

    Args:
        z: activations, one row per sample (sequence or token), any floating dtype; computed in float32 (float64
            stays float64). A batch ``[k, n, d]`` (e.g. the rows of ``k`` layers) gives ``k`` values from one set of
            batched operations.
        normalize: ``samples``: L2-normalise the rows (cosine Gram). ``features``: standardise the columns
            (correlation matrix). ``False``: use ``z`` as it is (the paper's formula read literally).
        reduction: ``"sum"`` (squared Frobenius norm, the paper) or ``"mean"`` (divided by the number of entries of
            ``M``: ``n^2`` for ``samples``, ``d^2`` for ``features``).
        target: ``"samples"`` (``n x n``, the paper) or ``"features"`` (``d x d``).
        eps: guards the divisions by a row norm or a feature standard deviation.

    Returns:
        A scalar tensor (``[k]`` for a batch), float32 (float64 for float64 input), differentiable once with respect to
        ``z``.
    """
    _validate(z, normalize, reduction, target)
    size = z.shape[-2] if target == "samples" else z.shape[-1]
    return _Penalty.apply(z, normalize, target, eps, size * size if reduction == "mean" else 1)
