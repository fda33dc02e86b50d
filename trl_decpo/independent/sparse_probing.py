# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""k-sparse probing of neurons on labelled concepts (Gurnee et al. 2023, "Finding Neurons in a Haystack"), as pure
tensor math: how well the best ``k`` neurons separate a concept, against a probe on every neuron (docs/method.md).

1. The rows (one per labelled example) are split into a training and a held-out part, stratified by class.
2. Each neuron is ranked on the training part by the F statistic of a one-way ANOVA across the classes: the variance of
   the class means over the pooled within-class variance (for two classes, the square of the pooled two-sample t
   statistic, i.e. the mean difference in units of its standard error). It is scale-free, so a neuron with large
   activations is not preferred for its scale.
3. For each ``k``, an L2-regularised multinomial logistic regression is fitted on the ``k`` best neurons
   (standardised with the training part's mean and standard deviation), and its accuracy is measured on the held-out
   part. ``k = None`` is the dense probe, on every neuron.

A concept that one neuron carries gives a k = 1 accuracy close to the dense one; a concept spread over many neurons
(polysemantic, or a rotated basis) gives a clearly lower k = 1 accuracy at the same dense accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


DEFAULT_KS = (1, 2, 4, 8, 16, None)
_EPS = 1e-12


@dataclass
class SparseProbingResult:
    """Held-out accuracy of the best-``k``-neuron probe for each ``k`` (``None``: the dense probe, every neuron)."""

    accuracy: dict[int | None, float]
    neurons: dict[int, list[int]]  # k -> the k best neurons, best first
    classes: list  # the label values, in the order of the probe's classes
    num_train: int
    num_test: int
    chance: float  # held-out accuracy of always answering the training part's most frequent class
    scores: list[float] = field(default_factory=list, repr=False)  # each neuron's F statistic on the training part
    test_index: list[int] = field(default_factory=list, repr=False)  # the held-out rows, in order
    correct: dict[int | None, list[int]] = field(default_factory=dict, repr=False)  # k -> 1/0 per held-out row

    def gap(self, k: int = 1) -> float:
        """Dense accuracy minus the best-``k`` accuracy: small for a concept that ``k`` neurons carry."""
        return self.accuracy[None] - self.accuracy[k]

    def to_dict(self) -> dict:
        return {
            "accuracy": {("dense" if k is None else str(k)): value for k, value in self.accuracy.items()},
            "neurons": {str(k): value for k, value in self.neurons.items()},
            "classes": [str(c) for c in self.classes],
            "num_train": self.num_train,
            "num_test": self.num_test,
            "chance": self.chance,
        }


def _encode_labels(labels, n: int) -> tuple[torch.Tensor, list]:
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(values) != n:
        raise ValueError(f"`labels` has {len(values)} entries for {n} rows of `activations`")
    classes = sorted(set(values), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise ValueError(f"`labels` needs at least 2 classes, got {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[v] for v in values]), classes


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and held-out parts: ``test_fraction`` of each class (at least one row each side)."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(int(y.max()) + 1):
        rows = torch.nonzero(y == c).flatten()
        if len(rows) < 2:
            raise ValueError(f"class {c} of `labels` has {len(rows)} row: each class needs 2 or more")
        rows = rows[torch.randperm(len(rows), generator=generator)]
        cut = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
        test.append(rows[:cut])
        train.append(rows[cut:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def anova_f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The one-way ANOVA F statistic of each column of ``x`` [N, d] across the classes ``y`` [N] (float64)."""
    x = x.to(torch.float64)
    num_classes, n = int(y.max()) + 1, len(y)
    counts = torch.bincount(y, minlength=num_classes).to(torch.float64)
    means = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, y, x) / counts[:, None]
    grand = x.mean(0)
    between = (counts[:, None] * (means - grand) ** 2).sum(0) / (num_classes - 1)
    within = ((x - means[y]) ** 2).sum(0) / max(n - num_classes, 1)
    return between / within.clamp_min(_EPS)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int) -> torch.Tensor:
    """Weights ``[d + 1, C]`` (the last row the bias) of an L2-regularised multinomial logistic regression, by L-BFGS
    in float64 from zero (deterministic)."""
    features = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    weights = torch.zeros(features.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(features @ weights, y) + l2 * weights[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weights.detach()


def sparse_probing(
    activations: torch.Tensor,
    labels: Sequence | torch.Tensor,
    ks: Sequence[int | None] | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    l2: float = 1e-3,
    max_iter: int = 500,
) -> SparseProbingResult:
    """Held-out accuracy of the best-``k``-neuron probe for each of ``ks`` (``None``: the dense probe).

    Args:
        activations: ``[N, d]`` rows, one per labelled example (e.g. :meth:`MonosemanticityReport.rows`).
        labels: ``N`` labels, binary or multi-class (any hashable values: ints, strings, booleans).
        ks: numbers of neurons, each at most ``d`` (default: those of :data:`DEFAULT_KS` up to ``d``). ``None`` is the
            dense probe, always measured (the gap is against it).
        test_fraction: the share of each class held out (at least one row of each class on each side).
        seed: the split's seed.
        l2: the logistic regression's L2 penalty on the weights (not the bias), on standardised neurons.
    """
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
        shape = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise ValueError(f"`activations` must be a 2-D tensor [num_examples, num_neurons], got {shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}")
    if not l2 >= 0:
        raise ValueError(f"`l2` must be >= 0, got {l2}")
    n, d = activations.shape
    ks = [k for k in DEFAULT_KS if k is None or k <= d] if ks is None else ks
    ks = list(dict.fromkeys([*ks, None]))  # in order, without repeats, the dense probe always included
    bad = [k for k in ks if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d)]
    if bad:
        raise ValueError(f"`ks` entries must be integers in [1, {d}] (the number of neurons) or None, got {bad}")
    y, classes = _encode_labels(labels, n)
    x = activations.detach().to(torch.float64).cpu()
    if not torch.isfinite(x).all():
        raise ValueError("`activations` holds non-finite values")
    counts = torch.bincount(y, minlength=len(classes))
    rare = [f"{classes[c]!r} ({int(counts[c])} row)" for c in range(len(classes)) if counts[c] < 2]
    if rare:
        raise ValueError(
            f"`labels` {', '.join(rare)}: each class needs 2 or more rows (one on each side of the split)"
        )
    train, test = stratified_split(y, test_fraction, seed)
    mean, std = x[train].mean(0), x[train].std(0, unbiased=False)
    x = (x - mean) / torch.where(std > _EPS, std, torch.ones_like(std))
    scores = anova_f(x[train], y[train])
    order = torch.argsort(scores, descending=True, stable=True)
    accuracy, neurons, correct = {}, {}, {}
    for k in ks:
        chosen = order if k is None else order[:k]
        weights = fit_logistic(x[train][:, chosen], y[train], len(classes), l2, max_iter)
        features = torch.cat([x[test][:, chosen], torch.ones(len(test), 1, dtype=torch.float64)], dim=1)
        hits = (features @ weights).argmax(1) == y[test]
        accuracy[k], correct[k] = hits.double().mean().item(), hits.int().tolist()
        if k is not None:
            neurons[k] = chosen.tolist()
    majority = torch.bincount(y[train], minlength=len(classes)).argmax()
    return SparseProbingResult(
        accuracy=accuracy,
        neurons=neurons,
        classes=classes,
        num_train=len(train),
        num_test=len(test),
        chance=(y[test] == majority).double().mean().item(),
        scores=scores.tolist(),
        test_index=test.tolist(),
        correct=correct,
    )
