# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""DecPO: `DecPOConfig` (`trl.DPOConfig` plus the decorrelation penalty's settings, with DPO's wording for the
coefficient and the sequences) and `DecPOTrainer` (`trl.DPOTrainer` plus the penalty, the DPO instance of
`DecorrelationMixin`); `PAPER_RECIPE`, the paper's settings read literally."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer

from ..capture import SEQUENCES_CHOICES
from ..compat import batch_masks
from ..mixin import DecorrelationArguments, DecorrelationMixin
from ..mixin.card import DECPO_PAPER
from ..mixin.checks import check_preference_columns


# The paper's formula read literally, with its coefficient: `1e-4 * ||z z^T - I||_F^2` on raw activations.
PAPER_RECIPE = {
    "decorrelation_coef": 1e-4,
    "decorrelation_normalize": False,
    "decorrelation_reduction": "sum",
    "decorrelation_target": "samples",
    "decorrelation_pooling": "last",
}


@dataclass
class DecPOConfig(DecorrelationArguments, DPOConfig):
    r"""
    Configuration class for [`DecPOTrainer`]: every [`~trl.DPOConfig`] field, plus the decorrelation penalty of
    Yan et al. (arXiv 2406.17969), `loss = loss_DPO + decorrelation_coef * sum_layers ||M - I||_F^2`.

    Parameters:
        decorrelation_coef (`float`, *optional*, defaults to `1.0`):
            Weight of the penalty. `0` turns it off: the trainer then behaves exactly like `trl.DPOTrainer`. The
            default comes from the SmolLM2-135M sweep in `docs/defaults.md`; every choice is explained in
            `docs/method.md`.
        decorrelation_layers (`list[int]` or `None`, *optional*):
            Decoder layers whose activations are decorrelated (negative indices count from the end). `None`: one layer
            at about a third of the depth: of the layers that hold the site, the one nearest to `num_layers // 3`
            (layer 10 of Llama-2-7B, as in the paper).
        decorrelation_site (`str` or `None`, *optional*):
            Module path inside a decoder layer whose output is captured, e.g. `mlp.up_proj`; append `:input` to
            capture the module's input instead (`mlp.down_proj:input` is the full gated product). `None`: a rule per
            layer (docs/method.md, section 2): `mlp.up_proj` for gated MLPs (Llama, Mistral, Qwen2, Gemma), `mlp.act`
            for GPT-2 and GPT-NeoX, else the input of the MLP's output projection, a shared expert's, or the output of
            a fused-expert MoE block.
        decorrelation_pooling (`str`, *optional*, defaults to `"last"`):
            How a sequence's token activations become rows: `last` (the last real token, one row per sequence),
            `mean` (mean over its completion tokens) or `tokens` (every completion token is a row).
        decorrelation_sequences (`str`, *optional*, defaults to `"both"`):
            Which sequences of the `[chosen; rejected]` batch give rows: `chosen`, `rejected` or `both`.
        decorrelation_normalize (`bool`, *optional*, defaults to `True`):
            `True`: L2-normalise the rows (cosine Gram; for the `features` target, standardise the features into a
            correlation matrix). `False`: raw activations, the paper's formula read literally.
        decorrelation_reduction (`str`, *optional*, defaults to `"mean"`):
            `sum` (squared Frobenius norm, the paper) or `mean` (divided by the number of matrix entries: scale-free).
        decorrelation_target (`str`, *optional*, defaults to `"samples"`):
            `samples` (the `n x n` Gram of the rows, the paper) or `features` (the `d x d` feature correlation, computed
            without ever building a `d x d` matrix when `d > n`).
        decorrelation_max_rows (`int` or `None`, *optional*):
            Cap on the rows per layer with `decorrelation_pooling="tokens"` (evenly subsampled). Required for
            `tokens` pooling with the `samples` target, whose `n x n` Gram grows with the square of the token count.
        decorrelation_across_ranks (`bool`, *optional*, defaults to `False`):
            `True`: each layer's penalty is computed on the rows of every data-parallel process together
            (all-gathered with their gradient), so a small per-device batch still gives a Gram of `world_size` times
            its rows; the gradient is that of the global batch's penalty. `False`: each process's own rows.
    """

    decorrelation_coef: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the DecPO decorrelation penalty added to the DPO loss. 0 turns it off (plain DPO)."
        },
    )
    decorrelation_sequences: str = field(
        default="both",
        metadata={
            "help": "Which sequences of the [chosen; rejected] batch give rows: 'chosen', 'rejected' or 'both'.",
            "choices": list(SEQUENCES_CHOICES),
        },
    )


class DecPOTrainer(DecorrelationMixin, DPOTrainer):
    """`trl.DPOTrainer` with the DecPO penalty (Yan et al., arXiv 2406.17969).

    The constructor is `DPOTrainer`'s. With a [`DecPOConfig`] whose `decorrelation_coef > 0`, every `compute_loss`
    captures the activations of the policy forward at the configured sites, pools them into one row per sequence (or
    token), and adds `decorrelation_coef * sum_layers penalty` to the DPO loss. TRL's `loss` is that total, the loss
    that is optimised; the DPO loss alone is logged as `decorrelation/dpo_loss`, and the penalty (total and per layer)
    as `decorrelation/penalty` and `decorrelation/layer_<i>`, next to DPO's metrics, in train and eval.

    With a plain `DPOConfig`, or `decorrelation_coef=0`, no hook is registered and the trainer is `DPOTrainer`.

    The mechanism is [`DecorrelationMixin`]'s, shared with the decorrelated SFT, KTO, reward, GRPO and RLOO trainers;
    what is DPO's here is the row map (the `[chosen; rejected]` batch), the refusal of a dataset that is not a
    preference dataset, and the model card's identity (DecPO's name and paper; DPO's when the penalty is off).

    Example:

    ```python
    from trl_decpo import DecPOConfig, DecPOTrainer

    trainer = DecPOTrainer(model=model, args=DecPOConfig("out"), train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    ```
    """

    _decorrelation_config = DecPOConfig
    decorrelation_card = {"name": "DecPO", "tags": ["trl", "dpo", "decpo", "decorrelation"], "paper": DECPO_PAPER}

    def decorrelation_batch(self, inputs: dict) -> dict:
        """One row per sequence of the `[chosen; rejected]` batch; completions from `completion_mask`."""
        return batch_masks(inputs)

    def _check_inputs(self, arguments: dict) -> None:
        for name in ("train_dataset", "eval_dataset"):
            check_preference_columns(arguments.get(name), name)
