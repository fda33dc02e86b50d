# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Every assumption trl-decpo makes about TRL and transformers internals, in one place.

Public APIs are preferred everywhere else; what is here relies on behaviour that TRL or transformers may change
without notice. Each assumption is pinned by a test in ``tests/test_compat.py`` that fails loudly (naming the
assumption) when an upgrade breaks it:

1. A TRL trainer's ``__init__`` names its arguments ``model``, ``args``, ``peft_config``, ``train_dataset`` and
   ``eval_dataset``: a decorrelated trainer binds its arguments to that signature to inspect them before TRL processes
   anything (:func:`bind_trainer_arguments`).
2. ``DPOTrainer.compute_loss`` runs the policy forward before any reference forward (a PEFT model with its adapter
   disabled, a PEFT model whose reference is a separate ``ref`` adapter, or a separate reference model): hooks keep the
   first call of each module inside ``compute_loss``.
3. DPO batches hold ``[chosen; rejected]`` along the batch dimension, with ``input_ids``, ``attention_mask`` and
   ``completion_mask`` (:func:`batch_masks`). TRL 1.16 turns ``padding_free`` off for DPO; packed batches (restarting
   ``position_ids``, no attention mask) are handled by :mod:`trl_decpo.capture.rows` and tested there on their own.
4. ``DPOTrainer.log`` merges (then clears) only the metrics it accumulated for the model's current mode, so a log
   from a callback with the model in eval mode leaves the step's training metrics for the trainer's own next log
   (:func:`log_outside_step`). (The decorrelation metrics keep their own store, merged by ``DecorrelationMixin.log``
   as TRL's trainers merge theirs: no write into TRL's ``_metrics``.)
5. ``Trainer.log`` may clear ``TrainerControl.should_log`` through its callbacks (:func:`log_outside_step`).
6. transformers 5 renamed ``gradient_checkpointing*`` training arguments to ``activation_checkpointing*``; the old
   names are deprecated aliases that hold the same objects as the new ones (:func:`checkpointing_settings`,
   :func:`set_checkpointing_kwargs`).
7. ``DPOTrainer.__init__`` forces ``use_reentrant=True`` for a PEFT model under DeepSpeed ZeRO-3 with gradient
   checkpointing, writing it into the checkpointing kwargs' dict in place (:func:`set_checkpointing_kwargs` makes that
   dict the one under both names, so the forced value is what the model gets; DecPO trains under it by injecting the
   penalty's gradient, :mod:`trl_decpo.capture.injection`).
8. ``DPOTrainer`` names its model-card identity in the attributes ``_tag_names``, ``_name`` and ``_paper`` (a dict
   with a ``citation``), read by ``create_model_card``, which writes ``README.md`` into ``args.output_dir``
   (:func:`trainer_card_identity`, :func:`set_card_identity`); ``Trainer.callback_handler.callbacks`` lists the
   callbacks (:func:`trainer_callbacks`).
9. ``DPOTrainer``'s collator (``DataCollatorForPreference``) keeps the id it pads with in ``pad_token_id``
   (:func:`trainer_pad_token_id`).
10. Without ``args``, ``DPOTrainer`` writes to ``<model id>-DPO``, the id from ``trl.trainer.utils.get_config_model_id``
    (:func:`default_output_dir`).
11. ``DPOTrainer`` tokenizes a prompt into ``prompt_ids`` as :func:`trl_decpo.monosemanticity.probes.tokenize_prompts`
    does (chat template with the generation prompt; text without an EOS the tokenizer appends), and needs the text
    columns ``chosen`` and ``rejected`` (pre-tokenized columns alone fail with a ``KeyError``), which
    :func:`trl_decpo.mixin.checks.check_preference_columns` refuses up front.
12. torch's DDP skips the parameters and buffers named in ``module._ddp_params_and_buffers_to_ignore``
    (:func:`ignore_bool_buffers_in_ddp`).
13. ``Trainer.training_step`` divides the loss by ``current_gradient_accumulation_steps`` unless the trainer's
    ``loss_is_scaled_for_ga`` (or, when it is ``None``, ``model_accepts_loss_kwargs`` with a ``num_items_in_batch``, or
    a ``compute_loss_func``) says ``compute_loss`` already did (:func:`loss_is_scaled_for_ga`): a penalty added to an
    already scaled loss is scaled the same way.
14. ``KTOTrainer._compute_kl_logps(model, batch)`` runs the policy's no-grad forward over the KL batch, before the
    policy forward with gradients, inside ``compute_loss`` (:func:`capture_paused_in_kto_kl_pass`).
15. SFT, KTO, Reward, GRPO and RLOO trainers merge their metrics by mode in ``log`` as DPO does (assumption 4) and keep
    the model-card identity attributes ``_tag_names`` / ``_name`` / ``_paper`` (assumption 8).
16. TRL's configs default ``gradient_checkpointing=True``, under the name transformers 5 deprecates (so that every
    config built without ``activation_checkpointing`` warns; :func:`adopt_trl_checkpointing_default`); and TRL
    (``trl.models.utils.disable_gradient_checkpointing`` around the reference forwards of DPO, KTO, GRPO and RLOO,
    ``unwrap_model_for_generation`` in GRPO and RLOO) and PEFT (``PeftModel.__init__``,
    ``prepare_model_for_kbit_training``) call the models' deprecated ``is_gradient_checkpointing``,
    ``gradient_checkpointing_enable`` and ``gradient_checkpointing_disable``, on which transformers warns at every
    step: :func:`quiet_deprecated_checkpointing_calls` silences exactly those warnings around our calls into them.
17. ``DPOTrainer`` prepares eval pairs as :func:`trl_decpo.evaluation.preference.tokenize_pairs` and ``kept_pairs`` do
    (``extract_prompt`` when there is no ``prompt``; EOS appended to text completions; prompt, prompt + chosen and
    prompt + rejected tokenized whole; the completion from ``common_prefix_length``; ``keep_start`` drops pairs whose
    prompt fills ``max_length``), a recipe TRL keeps inside its private ``_prepare_dataset``, and collates them with
    ``trl.trainer.dpo_trainer.DataCollatorForPreference``, which the evaluation calls (:func:`dpo_collator`).
18. ``trl``'s command resolves ``--accelerate_config`` (a preset of ``trl/accelerate_configs`` or a file) into
    ``accelerate launch``'s ``--config_file`` with ``trl.cli.accelerate_config.resolve_accelerate_config_argument``
    (:func:`resolve_accelerate_config`), which ``trl-decpo dpo`` reuses; and an argparse parser lists its options in
    ``_actions`` (:func:`parser_options`: which options ``accelerate launch`` takes, and which of them take a value).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings

import torch


def bind_trainer_arguments(trainer_class: type, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """``trainer_class.__init__``'s arguments by name (assumption 1); ``bound.args[1:]`` / ``bound.kwargs`` call it."""
    return inspect.signature(trainer_class.__init__).bind(None, *args, **kwargs)


def batch_masks(inputs: dict) -> dict:
    """The tensors of a DPO batch that locate its sequences and completions (assumption 3)."""
    return {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs.get("attention_mask"),
        "completion_mask": inputs.get("completion_mask"),
        "position_ids": inputs.get("position_ids"),
    }


def log_outside_step(trainer, logs: dict) -> None:
    """``trainer.log(logs)`` from a callback, outside the trainer's own logging of a step.

    ``DPOTrainer.log`` merges (and clears) the metrics it accumulated for the model's current mode: in eval mode,
    outside an evaluation, there are none, so the training metrics stay for the trainer's own next log. Logging also
    clears ``control.should_log``; it is restored, so that a step's own log still happens after this one (assumptions
    4 and 5).
    """
    was_training, should_log = trainer.model.training, trainer.control.should_log
    trainer.model.eval()
    try:
        trainer.log(logs)
    finally:
        trainer.model.train(was_training)
        trainer.control.should_log = should_log


def checkpointing_settings(args) -> tuple[bool, dict]:
    """``(enabled, kwargs)`` of activation checkpointing, under either name (assumption 6)."""
    enabled = getattr(args, "activation_checkpointing", None)
    if enabled is None:
        enabled = getattr(args, "gradient_checkpointing", False)
    kwargs = getattr(args, "activation_checkpointing_kwargs", None)
    if kwargs is None:
        kwargs = getattr(args, "gradient_checkpointing_kwargs", None)
    return bool(enabled), dict(kwargs or {})


def set_checkpointing_kwargs(args, kwargs: dict) -> None:
    """Set the checkpointing kwargs under every name the arguments have, as ONE dict (assumption 6): TRL writes into
    the old name's dict in place (assumption 7), and the change must be seen under the new name too."""
    kwargs = dict(kwargs)
    for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
        if hasattr(args, name):
            setattr(args, name, kwargs)


def adopt_trl_checkpointing_default(args) -> None:
    """Before ``TrainingArguments.__post_init__`` resolves the names: TRL's default ``gradient_checkpointing=True``
    with ``activation_checkpointing`` unset becomes ``activation_checkpointing=True`` (the same setting under its new
    name), so that transformers does not warn on every run about a name the user never wrote (assumption 16). Any
    other value under the old name (``False``) is left to transformers, which takes it and warns about it."""
    if (
        getattr(args, "activation_checkpointing", False) is None
        and getattr(args, "gradient_checkpointing", None) is True
    ):
        args.activation_checkpointing, args.gradient_checkpointing = True, None


# transformers' FutureWarnings for the model methods that TRL and PEFT still call under their deprecated names
DEPRECATED_CHECKPOINTING_CALLS = (
    r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated"
)


@contextlib.contextmanager
def quiet_deprecated_checkpointing_calls():
    """Silence transformers' FutureWarning about the deprecated ``is_gradient_checkpointing`` /
    ``gradient_checkpointing_enable`` / ``gradient_checkpointing_disable`` model methods (assumption 16), and nothing
    else, around a call into TRL or PEFT that uses them (a TRL trainer's ``__init__``, ``training_step`` and
    ``prediction_step``; ``PeftModel.from_pretrained``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=DEPRECATED_CHECKPOINTING_CALLS,
            category=FutureWarning,
            module=r"transformers\.modeling_utils",
        )
        yield


def trainer_card_identity(trainer_class: type) -> dict:
    """A TRL trainer's model-card identity, ``{"name", "tags", "paper"}`` (assumption 8): its ``_name``,
    ``_tag_names`` and ``_paper`` (a dict with a ``citation`` BibTeX entry, or ``None``)."""
    return {
        "name": trainer_class._name,
        "tags": list(trainer_class._tag_names),
        "paper": trainer_class._paper,
    }


def set_card_identity(trainer, name: str, tags: list[str], paper: dict | None) -> None:
    """Give one trainer the model-card name, tags and paper that TRL's ``create_model_card`` writes (assumption 8)."""
    trainer._name, trainer._tag_names, trainer._paper = name, list(tags), paper


def trainer_callbacks(trainer) -> list:
    """The callbacks attached to a Trainer (assumption 8)."""
    return list(trainer.callback_handler.callbacks)


def default_output_dir(model, suffix: str) -> str:
    """``<model id>-<suffix>``, as ``DPOTrainer`` names its output folder when given no ``args`` (assumption 10)."""
    from trl.trainer.utils import get_config_model_id

    name = (model if isinstance(model, str) else get_config_model_id(model.config)) or "model"
    return f"{name.rstrip('/').split('/')[-1]}-{suffix}"


def trainer_pad_token_id(trainer) -> int | None:
    """The id the trainer's collator pads with, when it has one (assumption 9)."""
    return getattr(getattr(trainer, "data_collator", None), "pad_token_id", None)


def ignore_bool_buffers_in_ddp(model) -> None:
    """As ``trl dpo`` does for ``--ignore_bias_buffers``: DDP skips the model's boolean buffers (torch's
    ``_ddp_params_and_buffers_to_ignore``)."""
    model._ddp_params_and_buffers_to_ignore = [
        name for name, buffer in model.named_buffers() if buffer.dtype == torch.bool
    ]


def loss_is_scaled_for_ga(trainer, num_items_in_batch) -> bool:
    """Whether ``trainer.compute_loss`` already divided its loss for gradient accumulation, so that
    ``Trainer.training_step`` will not (assumption 13): ``loss_is_scaled_for_ga`` when the trainer sets it (GRPO: True;
    DPO, KTO, Reward, RLOO: False), else decided per call as ``Trainer.training_step`` does (SFT)."""
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
    if scaled is not None:
        return bool(scaled)
    return bool(
        (getattr(trainer, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
        or getattr(trainer, "compute_loss_func", None) is not None
    )


def capture_paused_in_kto_kl_pass(trainer_class: type) -> type:
    """Class decorator for a decorrelated ``KTOTrainer``: nothing is captured during ``_compute_kl_logps(model,
    batch)``, KTO's no-grad policy forward over its KL batch, which runs before the policy forward with gradients
    inside ``compute_loss`` (assumption 14). The method of the next class in the MRO runs inside the pause."""

    @functools.wraps(trainer_class._compute_kl_logps)
    def _compute_kl_logps(self, model, batch):
        with self.decorrelation_paused():
            return super(trainer_class, self)._compute_kl_logps(model, batch)

    trainer_class._compute_kl_logps = _compute_kl_logps
    return trainer_class


def dpo_collator(pad_token_id: int, max_length: int | None, truncation_mode: str):
    """The collator ``DPOTrainer`` builds for these settings: ``DataCollatorForPreference`` (assumption 17)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=pad_token_id, max_length=max_length, truncation_mode=truncation_mode)


def resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """``--accelerate_config NAME_OR_FILE`` in ``launch_args`` as ``trl`` resolves it (assumption 18)."""
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    return resolve_accelerate_config_argument(launch_args)


def parser_options(parser) -> dict[str, bool]:
    """Every option string of an argparse ``parser``, and whether it takes a value (assumption 18)."""
    return {option: action.nargs != 0 for action in parser._actions for option in action.option_strings}
