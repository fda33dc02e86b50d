# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""A sparse autoencoder (SAE) as an instrument the penalty does not train (docs/method.md): a TopK SAE trained with
SAELens (the optional extra ``trl-decpo[sae]``) on captured activations, and what it says of a model's neurons.

* :func:`train_sae`: a TopK SAE (``num_features`` dictionary features, ``k`` active per row) trained on ``[N, d]``
  activations by SAELens' ``SAETrainer``, offline, on any device; saved in SAELens' format when ``output_dir`` is
  given, and returned as a SAELens ``SAE``. :func:`load_sae` loads one saved so (or, online, a pretrained release).
* :func:`sae_report`: on a model's activations, the SAE's explained variance, L0 (active features per row) and dead
  fraction (features never active), and for each neuron the effective number of features that write to it.

The effective number of features of neuron ``j`` is the participation ratio ``(sum_f c_fj)^2 / sum_f c_fj^2`` of the
features' mean absolute contributions ``c_fj = mean_n |a_nf| * |W_dec[f, j]|`` (``a`` the feature activations on the
rows): 1 when a single feature writes to the neuron, ``m`` when ``m`` features contribute equally. Lower means more
monosemantic. Any object with ``encode(x)`` and ``W_dec`` (``[num_features, d]``) serves as the SAE.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import torch

from ..utils import check_int, is_int


_EPS = 1e-12


def _sae_lens():
    try:
        import sae_lens
    except ImportError as err:
        raise ImportError(
            "training or loading an SAE needs SAELens: pip install 'trl-decpo[sae]' (sae-lens>=6.54)"
        ) from err
    return sae_lens


def _check_rows(activations, what: str = "activations") -> torch.Tensor:
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2 or len(activations) < 2:
        shape = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise ValueError(f"`{what}` must be a 2-D tensor [num_rows >= 2, width], got {shape}")
    if not torch.isfinite(activations).all():
        raise ValueError(f"`{what}` holds non-finite values")
    return activations.detach()


def train_sae(
    activations: torch.Tensor,
    num_features: int,
    k: int = 8,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 3e-4,
    lr_end: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    output_dir: str | None = None,
):
    """A TopK SAE trained on ``activations`` ``[N, d]`` (rows drawn at random with replacement, ``batch_size`` per
    step, seeded), with SAELens' ``SAETrainer``: ``num_features`` features, ``k`` active per row, Adam at ``lr``
    (constant, or cosine-annealed to ``lr_end``), the activations scaled to an expected norm of ``sqrt(d)`` during training and
    the scale folded back into the weights. Saved in SAELens' format into ``output_dir`` when given; returns the SAE as
    SAELens' inference ``SAE`` (``encode``, ``decode``, ``W_dec``). The global random state is left as it was."""
    sae_lens = _sae_lens()
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    x = _check_rows(activations).to(torch.float32).cpu()
    check_int("num_features", num_features)
    check_int("k", k)
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    if k > num_features:
        raise ValueError(f"`k` ({k}) must be at most `num_features` ({num_features})")
    if not lr > 0 or (lr_end is not None and not lr_end >= 0):
        raise ValueError(f"`lr` must be > 0 and `lr_end` >= 0, got {lr} and {lr_end}")
    generator = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            yield x[torch.randint(len(x), (batch_size,), generator=generator)].to(device)

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # manual_seed reseeds CUDA too: restored afterwards as well
        torch.manual_seed(seed)  # the SAE's initialisation
        config = TopKTrainingSAEConfig(
            d_in=x.shape[1], d_sae=num_features, k=k, dtype="float32", device=device,
            normalize_activations="expected_average_only_in",
        )  # fmt: skip
        sae = TopKTrainingSAE(config)
        trainer = SAETrainerConfig(
            total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
            lr_end=lr if lr_end is None else lr_end,
            lr_scheduler_name="constant" if lr_end is None else "cosineannealing",
            device=device, logger=LoggingConfig(log_to_wandb=False),
            n_batches_for_norm_estimate=min(100, steps),
        )  # fmt: skip
        SAETrainer(cfg=trainer, sae=sae, data_provider=batches()).fit()
    with tempfile.TemporaryDirectory() as scratch:
        path = output_dir or scratch
        sae.save_inference_model(path)
        return sae_lens.SAE.load_from_disk(path, device=device)


def load_sae(path_or_release: str, sae_id: str | None = None, device: str = "cpu"):
    """An SAE saved in SAELens' format (a folder, e.g. by :func:`train_sae`), or, with ``sae_id``, a pretrained SAELens
    release (downloaded: online only)."""
    sae_lens = _sae_lens()
    if sae_id is None:
        if not os.path.isdir(path_or_release):
            raise ValueError(f"`path_or_release` {path_or_release!r} is not a folder; pass `sae_id` for a release")
        return sae_lens.SAE.load_from_disk(path_or_release, device=device)
    return sae_lens.SAE.from_pretrained(path_or_release, sae_id, device=device)


@dataclass
class SAESettings:
    """Which SAE scores the models of a comparison (:func:`~trl_decpo.compare_monosemanticity`), at which layer. By
    default one TopK SAE is trained on the base model's token activations at ``layer`` and every model, the base
    included, is scored with it (docs/method.md says why); ``sae`` (a trained SAE, or a folder in SAELens' format)
    is used instead of training one."""

    layer: int
    num_features: int | None = None  # default: 4 x the width of the activations
    k: int = 32
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    max_rows: int = 50_000  # token activations per model (the first ones of the prompts, in order)
    content_only: bool = True  # leave out the tokens every probe shares (BOS, a chat template's prefix and suffix)
    seed: int = 0
    sae: object | None = None
    output_dir: str | None = None  # where the trained SAE is saved, in SAELens' format
    device: str = "cpu"  # where the SAE trains

    def __post_init__(self):
        if not is_int(self.layer):
            raise ValueError(f"`layer` must be an integer (negative counts from the end), got {self.layer!r}")
        for name in ("k", "steps", "batch_size", "max_rows"):
            check_int(name, getattr(self, name))
        check_int("num_features", self.num_features, allow_none=True)

    def train(self, activations: torch.Tensor):
        """The SAE for these settings: ``sae`` (loaded when a folder), or one trained on ``activations``."""
        if isinstance(self.sae, (str, os.PathLike)):
            return load_sae(os.fspath(self.sae), device=self.device)
        if self.sae is not None:
            return self.sae
        num_features = self.num_features or 4 * activations.shape[1]
        return train_sae(
            activations, num_features, min(self.k, num_features), steps=self.steps, batch_size=self.batch_size,
            lr=self.lr, seed=self.seed, output_dir=self.output_dir, device=self.device,
        )  # fmt: skip


@dataclass
class SAEReport:
    """What an SAE says of one model's activations (:func:`sae_report`)."""

    explained_variance: float  # 1 - sum ||x - x_hat||^2 / sum ||x - mean||^2
    l0: float  # mean number of active features per row
    dead_fraction: float  # features never active on these rows
    neuron_features: list[float] = field(repr=False)  # effective number of features writing to each neuron
    num_rows: int = 0

    @property
    def mean_neuron_features(self) -> float:
        """The mean over neurons of the effective number of features (neurons no feature writes to left out)."""
        values = [v for v in self.neuron_features if v == v]
        return sum(values) / len(values) if values else float("nan")

    def to_dict(self) -> dict:
        return {
            "explained_variance": self.explained_variance,
            "l0": self.l0,
            "dead_fraction": self.dead_fraction,
            "mean_neuron_features": self.mean_neuron_features,
            "num_rows": self.num_rows,
        }


@torch.no_grad()
def sae_report(sae, activations: torch.Tensor, batch_size: int = 1024) -> SAEReport:
    """Explained variance, L0, dead fraction and each neuron's effective number of features of ``sae`` (anything with
    ``encode(x)`` and ``W_dec`` ``[num_features, d]``; ``decode`` when it has one) on ``activations`` ``[N, d]``."""
    x = _check_rows(activations)
    w_dec = sae.W_dec.detach()
    if w_dec.dim() != 2 or w_dec.shape[1] != x.shape[1]:
        raise ValueError(f"the SAE's `W_dec` has shape {tuple(w_dec.shape)}; the activations have width {x.shape[1]}")
    check_int("batch_size", batch_size)
    device, dtype = w_dec.device, w_dec.dtype
    residual = total = active_rows = 0.0
    mean_row = x.to(torch.float64).mean(0).cpu()
    usage = torch.zeros(w_dec.shape[0], dtype=torch.float64)  # sum of |activation| per feature
    fired = torch.zeros(w_dec.shape[0], dtype=torch.bool)
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device=device, dtype=dtype)
        codes = sae.encode(batch)
        rebuilt = sae.decode(codes) if hasattr(sae, "decode") else codes @ w_dec + getattr(sae, "b_dec", 0)
        batch64 = batch.to(torch.float64).cpu()
        residual += (batch64 - rebuilt.to(torch.float64).cpu()).pow(2).sum().item()
        total += (batch64 - mean_row).pow(2).sum().item()
        codes = codes.to(torch.float64).cpu()
        active_rows += (codes != 0).sum().item()
        usage += codes.abs().sum(0)
        fired |= (codes != 0).any(0)
    contributions = (usage / len(x))[:, None] * w_dec.to(torch.float64).cpu().abs()  # [features, neurons]
    sums, squares = contributions.sum(0), contributions.pow(2).sum(0)
    neuron_features = torch.where(
        squares > _EPS, sums.pow(2) / squares.clamp_min(_EPS), torch.full_like(sums, float("nan"))
    )
    return SAEReport(
        explained_variance=1.0 - residual / max(total, _EPS),
        l0=active_rows / len(x),
        dead_fraction=1.0 - fired.double().mean().item(),
        neuron_features=neuron_features.tolist(),
        num_rows=len(x),
    )
