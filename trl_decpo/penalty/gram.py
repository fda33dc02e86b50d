# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Gram-matrix identities that keep the penalty's cost at ``min(n, d)^2`` entries.

For any ``A`` of shape ``[a, b]``: ``||A A^T - I_a||_F^2 = ||A^T A||_F^2 - 2 ||A||_F^2 + a``. So the penalty of an
``[n, d]`` activation matrix never needs the larger of its two Gram matrices: a ``d x d`` matrix is never built when
``d > n`` (11008^2 entries for Llama-2-7B's MLP), and an ``n x n`` one never when ``n > d``.
"""

from __future__ import annotations

import torch


def gram_terms(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(||A A^T - I||_F^2, the Gram used, whether it is the a x a one)`` for ``A`` of shape ``[..., a, b]``."""
    rows, cols = a.shape[-2:]
    if rows <= cols:
        gram = a @ a.mT
        gram.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # - I, in place: this Gram is A A^T - I
        return gram.square().sum((-2, -1)), gram, True
    gram = a.mT @ a
    return gram.square().sum((-2, -1)) - 2.0 * a.square().sum((-2, -1)) + rows, gram, False


def gram_minus_identity_sq(a: torch.Tensor) -> torch.Tensor:
    """``||A A^T - I||_F^2`` for ``A`` of shape ``[a, b]`` (or a batch ``[k, a, b]``: one value per matrix), built from
    whichever Gram matrix is smaller.

    Both forms are exact; the ``a x a`` one is used when ``a <= b``, otherwise the identity
    ``||A A^T - I_a||_F^2 = ||A^T A||_F^2 - 2 ||A||_F^2 + a`` gives the value from the ``b x b`` Gram.
    """
    if a.dim() not in (2, 3):
        raise ValueError(f"expected a 2-D tensor (or a 3-D batch of them), got shape {tuple(a.shape)}")
    return gram_terms(a)[0]
