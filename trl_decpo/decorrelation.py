# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The DecPO decorrelation penalty: pure tensor math, no hooks, no Trainer.

Yan et al. (arXiv 2406.17969) add ``lambda * ||z z^T - I||_F^2`` to the DPO loss. ``z`` is an ``[n, d]`` matrix of
activations, one row per input (see ``../shared/METHOD.md`` section 2 for the choices the paper leaves open). Two
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

Cost: ``||A A^T - I_a||_F^2 = ||A^T A||_F^2 - 2 ||A||_F^2 + a`` for any ``A`` of shape ``[a, b]``, so the penalty is
always computed from the smaller of the two Gram matrices (``min(n, d)`` squared entries): a ``d x d`` matrix is never
built when ``d > n`` (11008^2 for Llama-2-7B), and an ``n x n`` one never when ``n > d``. Everything is computed in
float32 whatever the input dtype.

Numerical safety: rows (``samples``) or columns (``features``) whose norm or standard deviation is zero are left at zero
instead of being divided by zero (``eps`` guards the division), so constant or all-zero activations give a finite
penalty and a finite gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


NORMALIZE_CHOICES = (True, False)
REDUCTION_CHOICES = ("sum", "mean")
TARGET_CHOICES = ("samples", "features")

# Guards the divisions by a row norm (``samples``) or a feature standard deviation (``features``).
DEFAULT_EPS = 1e-6


def gram_minus_identity_sq(a: torch.Tensor) -> torch.Tensor:
    """``||A A^T - I||_F^2`` for ``A`` of shape ``[a, b]`` (or a batch ``[k, a, b]``: one value per matrix), built from
    whichever Gram matrix is smaller.

    Both forms are exact; the ``a x a`` one is used when ``a <= b``, otherwise the identity
    ``||A A^T - I_a||_F^2 = ||A^T A||_F^2 - 2 ||A||_F^2 + a`` gives the value from the ``b x b`` Gram.
    """
    if a.dim() not in (2, 3):
        raise ValueError(f"expected a 2-D tensor (or a 3-D batch of them), got shape {tuple(a.shape)}")
    rows, cols = a.shape[-2:]
    if rows <= cols:
        gram = a @ a.mT
        gram.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # - I, in place (matmul's backward does not need its output)
        return gram.square().sum((-2, -1))
    gram = a.mT @ a
    return gram.square().sum((-2, -1)) - 2.0 * a.square().sum((-2, -1)) + rows


def _validate(z: torch.Tensor, normalize, reduction: str, target: str) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() not in (2, 3):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"`z` must be a 2-D tensor of shape [n, d] (or a batch [k, n, d]), got {shape}")
    if z.shape[-2] == 0 or z.shape[-1] == 0:
        raise ValueError(f"`z` must have at least one row and one column, got shape {tuple(z.shape)}")
    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(f"`normalize` must be one of {list(NORMALIZE_CHOICES)}, got {normalize!r}")
    if reduction not in REDUCTION_CHOICES:
        raise ValueError(f"`reduction` must be one of {list(REDUCTION_CHOICES)}, got {reduction!r}")
    if target not in TARGET_CHOICES:
        raise ValueError(f"`target` must be one of {list(TARGET_CHOICES)}, got {target!r}")


def standardize_features(z: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Centre every column of ``z`` over the rows and scale it so that ``V^T V`` is the correlation matrix.

    Returns ``V = (z - mean) / (sqrt(n) * std)`` (population std); a constant column stays zero.
    """
    n = z.shape[-2]
    centered = z - z.mean(dim=-2, keepdim=True)
    norm = centered.norm(dim=-2, keepdim=True)  # = sqrt(n) * std
    return centered / norm.clamp_min(eps * max(n, 1) ** 0.5)


def decorrelation_penalty(
    z: torch.Tensor,
    normalize: bool = True,
    reduction: str = "sum",
    target: str = "samples",
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """The DecPO penalty ``||M - I||_F^2`` of an ``[n, d]`` activation matrix (see the module docstring).

    Args:
        z: activations, one row per sample (sequence or token), any floating dtype; computed in float32. A batch
            ``[k, n, d]`` (e.g. the rows of ``k`` layers) gives ``k`` values from one set of batched operations.
        normalize: ``samples``: L2-normalise the rows (cosine Gram). ``features``: standardise the columns
            (correlation matrix). ``False``: use ``z`` as it is (the paper's formula read literally).
        reduction: ``"sum"`` (squared Frobenius norm, the paper) or ``"mean"`` (divided by the number of entries of
            ``M``: ``n^2`` for ``samples``, ``d^2`` for ``features``).
        target: ``"samples"`` (``n x n``, the paper) or ``"features"`` (``d x d``).
        eps: guards the divisions by a row norm or a feature standard deviation.

    Returns:
        A scalar float32 tensor (``[k]`` for a batch), differentiable with respect to ``z``.
    """
    _validate(z, normalize, reduction, target)
    z = z.float()
    n, d = z.shape[-2:]
    if target == "samples":
        u = F.normalize(z, dim=-1, eps=eps) if normalize else z
        value = gram_minus_identity_sq(u)
        entries = n * n
    else:
        v = standardize_features(z, eps) if normalize else z
        value = gram_minus_identity_sq(v.mT)
        entries = d * d
    if reduction == "mean":
        value = value / entries
    return value
