# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelationArguments`: the `decorrelation_*` fields every decorrelated trainer's config shares, validated once.

A config class is a TRL config plus these fields: ``class Config(DecorrelationArguments, trl.SFTConfig)`` (this order
keeps the TRL fields first, so that ``Config("out")`` still sets ``output_dir``). Validation runs before the TRL
config's own ``__post_init__``. A trainer whose batch has no ``[chosen; rejected]`` halves narrows
``decorrelation_sequences`` with the class attribute ``_decorrelation_sequences``. TRL's default
``gradient_checkpointing=True`` reaches transformers as ``activation_checkpointing=True``, its new name
(:func:`~trl_decpo.compat.adopt_trl_checkpointing_default`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..capture import POOLING_CHOICES, SEQUENCES_CHOICES, Site
from ..compat import adopt_trl_checkpointing_default
from ..penalty import REDUCTION_CHOICES, TARGET_CHOICES
from ..utils import check_choice, check_int, check_layers


@dataclass
class DecorrelationArguments:
    """The decorrelation penalty's settings (their meaning: `DecPOConfig`'s docstring and docs/method.md)."""

    # The values of `decorrelation_sequences` a trainer's batch gives a meaning to (subclasses narrow it).
    _decorrelation_sequences = SEQUENCES_CHOICES

    decorrelation_coef: float = field(
        default=1.0,
        metadata={"help": "Weight of the decorrelation penalty added to the trainer's loss. 0 turns it off."},
    )
    decorrelation_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Decoder layers whose activations are decorrelated; negative indices count from the end. "
            "Default: of the layers that hold the site, the one nearest to num_layers // 3."
        },
    )
    decorrelation_site: str | None = field(
        default=None,
        metadata={
            "help": "Module path inside a decoder layer whose output is captured, e.g. 'mlp.up_proj'; append ':input' "
            "to capture its input instead (e.g. 'mlp.down_proj:input'). Default: a rule per layer: 'mlp.up_proj' "
            "for gated MLPs (Llama, Mistral, Qwen2, Gemma), 'mlp.act' for GPT-2 / GPT-NeoX, else the input of the MLP's "
            "output projection, a shared expert's, or a fused MoE block's output."
        },
    )
    decorrelation_pooling: str = field(
        default="last",
        metadata={
            "help": "How token activations become rows: 'last' (last real token of each sequence), 'mean' (mean over "
            "completion tokens) or 'tokens' (every completion token is a row).",
            "choices": list(POOLING_CHOICES),
        },
    )
    decorrelation_sequences: str = field(
        default="both",
        metadata={
            "help": "Which sequences of a [chosen; rejected] batch give rows: 'chosen', 'rejected' or 'both' (only "
            "'both' for trainers whose batch has no such halves).",
            "choices": list(SEQUENCES_CHOICES),
        },
    )
    decorrelation_normalize: bool = field(
        default=True,
        metadata={
            "help": "L2-normalise the rows (cosine Gram; for the 'features' target, standardise the features). "
            "False uses raw activations, the paper's formula read literally."
        },
    )
    decorrelation_reduction: str = field(
        default="mean",
        metadata={
            "help": "'sum' (squared Frobenius norm, the paper) or 'mean' (divided by the number of matrix entries).",
            "choices": list(REDUCTION_CHOICES),
        },
    )
    decorrelation_target: str = field(
        default="samples",
        metadata={
            "help": "'samples' (n x n Gram of the rows, the paper) or 'features' (d x d feature correlation, never "
            "materialised when d > n).",
            "choices": list(TARGET_CHOICES),
        },
    )
    decorrelation_max_rows: int | None = field(
        default=None,
        metadata={
            "help": "Cap on the rows per layer with 'tokens' pooling (evenly subsampled). Required for 'tokens' "
            "pooling with the 'samples' target."
        },
    )

    decorrelation_across_ranks: bool = field(
        default=False,
        metadata={
            "help": "Compute each layer's penalty on the rows of every data-parallel process together (all-gathered, "
            "with their gradient) instead of each process's own: with a small per-device batch, a Gram of "
            "world_size times the rows. The gradient is then that of the global batch's penalty."
        },
    )

    def __post_init__(self):
        self._validate_decorrelation()
        adopt_trl_checkpointing_default(self)  # TRL's default under transformers' new name: no warning on every run
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    def _validate_decorrelation(self):
        coef = self.decorrelation_coef
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef) or coef < 0:
            raise ValueError(f"`decorrelation_coef` must be a finite number >= 0 (0 turns it off), got {coef!r}")
        self.decorrelation_layers = check_layers("decorrelation_layers", self.decorrelation_layers)
        if self.decorrelation_site is not None:
            Site.parse(self.decorrelation_site)  # raises with the expected format
        for name, allowed in (
            ("decorrelation_pooling", POOLING_CHOICES),
            ("decorrelation_sequences", SEQUENCES_CHOICES),
            ("decorrelation_reduction", REDUCTION_CHOICES),
            ("decorrelation_target", TARGET_CHOICES),
        ):
            check_choice(name, getattr(self, name), allowed)
        if self.decorrelation_sequences not in self._decorrelation_sequences:
            raise ValueError(
                f"`decorrelation_sequences={self.decorrelation_sequences!r}` has no meaning for "
                f"{type(self).__name__}, whose batches have no [chosen; rejected] halves; allowed: "
                f"{list(self._decorrelation_sequences)}"
            )
        for name in ("decorrelation_normalize", "decorrelation_across_ranks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}")
        cap = self.decorrelation_max_rows
        check_int("decorrelation_max_rows", cap, 2, allow_none=True)
        if self.decorrelation_pooling == "tokens" and self.decorrelation_target == "samples" and cap is None:
            raise ValueError(
                "`decorrelation_pooling='tokens'` with `decorrelation_target='samples'` builds an n x n Gram over every "
                "completion token of the batch; set `decorrelation_max_rows` (e.g. 1024) to cap n, or use "
                "`decorrelation_pooling` in ['last', 'mean'] or `decorrelation_target='features'`."
            )
        if self.decorrelation_pooling != "tokens" and cap is not None:
            raise ValueError(
                "`decorrelation_max_rows` only applies to `decorrelation_pooling='tokens'`; "
                f"got decorrelation_pooling={self.decorrelation_pooling!r}"
            )


def both_sequences_only():
    """``decorrelation_sequences`` for a trainer whose batch has no ``[chosen; rejected]`` halves: ``both`` only (in
    the command-line help too)."""
    return field(
        default="both",
        metadata={
            "help": "Which sequences give rows: only 'both' (every sequence), since this trainer's batches have no "
            "[chosen; rejected] halves.",
            "choices": ["both"],
        },
    )


DECORRELATED_CONFIG_DOC = """
    Configuration class for [`{trainer}`]: every [`~trl.{base}`] field, plus the decorrelation penalty's
    `decorrelation_*` fields (the same as [`DecPOConfig`]'s; see docs/method.md): `loss = loss_{name} +
    decorrelation_coef * sum_layers ||M - I||_F^2`, with rows as described in docs/trainers.md.
    `decorrelation_coef=0` turns it off: the trainer is then exactly [`~trl.{trainer_base}`].
    """
