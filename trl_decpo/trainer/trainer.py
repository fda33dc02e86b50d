# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecPOTrainer`: `trl.DPOTrainer` plus the decorrelation penalty, the DPO instance of `DecorrelationMixin`."""

from __future__ import annotations

from trl import DPOTrainer

from .card import DECPO_PAPER
from .checks import check_preference_columns
from .compat import batch_masks, use_dpo_card_identity
from .config import DecPOConfig
from .mixin import DecorrelationMixin


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

    _tag_names = ["trl", "dpo", "decpo", "decorrelation"]
    _name = "DecPO"
    _paper = DECPO_PAPER
    _decorrelation_config = DecPOConfig

    def decorrelation_batch(self, inputs: dict) -> dict:
        """One row per sequence of the `[chosen; rejected]` batch; completions from `completion_mask`."""
        return batch_masks(inputs)

    def _check_inputs(self, arguments: dict) -> None:
        for name in ("train_dataset", "eval_dataset"):
            check_preference_columns(arguments.get(name), name)

    def _set_card_identity(self, enabled: bool) -> None:
        if not enabled:  # plain DPO: same tags, name and citation as DPOTrainer on the model card
            use_dpo_card_identity(self)
