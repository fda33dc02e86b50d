# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelationMixin`: the decorrelation penalty as a capability of any TRL trainer; `DecPOTrainer` is one instance.

A decorrelated trainer is ``class X(DecorrelationMixin, trl.SomeTrainer)`` with a config that carries the shared
``decorrelation_*`` fields (:class:`~trl_decpo.mixin.arguments.DecorrelationArguments`) and one method, its *row map*:
:meth:`DecorrelationMixin.decorrelation_batch`, the tensors of a batch that locate its sequences (``input_ids`` or a
tensor of the same shape, ``attention_mask``, ``completion_mask``, ``position_ids``), given to
:func:`~trl_decpo.capture.build_row_index`. The mixin wraps ``compute_loss``: hooks live only around the trainer's own
``compute_loss`` (under reentrant checkpointing, :class:`~trl_decpo.capture.PenaltyInjection`'s until the end of the
step's backward, removed by ``training_step``), keep the first forward of each hooked module (the policy forward with gradients; a trainer whose first
forward is something else pauses the capture around it), and ``coef * penalty`` is added to the loss, scaled for
gradient accumulation exactly when the trainer scales its own loss. The trainer's own loss is logged as
``decorrelation/<name>_loss`` (``<name>`` is the TRL trainer's, lower case: ``dpo``, ``sft``, ``kto``, ...), the penalty
as ``decorrelation/penalty`` and ``decorrelation/layer_<i>``. Around the TRL trainer's ``__init__``, ``training_step``
and ``prediction_step``, transformers' warnings about the deprecated checkpointing methods that TRL and PEFT call
there are silenced (compat assumption 16), and nothing else.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict

import torch
from torch import nn
from transformers import TrainingArguments
from transformers.utils import logging

from ..capture import (
    ActivationCapture,
    PenaltyInjection,
    ResolvedSite,
    build_row_index,
    describe_sites,
    resolve_sites,
)
from ..capture.injection import MISSED
from ..capture.sites import KEPT_DEFAULTS, is_moe_block
from ..compat import (
    bind_trainer_arguments,
    checkpointing_settings,
    default_output_dir,
    loss_is_scaled_for_ga,
    quiet_deprecated_checkpointing_calls,
    set_card_identity,
    set_checkpointing_kwargs,
    trainer_card_identity,
)
from .arguments import DecorrelationArguments
from .card import DECPO_PAPER, append_to_card, callback_sections, settings_section
from .checks import check_gradient_path
from .penalties import layer_penalties, rows_penalty


logger = logging.get_logger(__name__)

DECORRELATION_TAGS = ["decpo", "decorrelation"]

SETTING_NAMES = (
    "decorrelation_coef",
    "decorrelation_pooling",
    "decorrelation_sequences",
    "decorrelation_normalize",
    "decorrelation_reduction",
    "decorrelation_target",
    "decorrelation_max_rows",
    "decorrelation_across_ranks",
)


def is_checkpointing(model: nn.Module) -> bool:
    """Whether activation checkpointing is on in ``model`` (transformers' ``gradient_checkpointing`` flag on a layer;
    a wrapper's inner model included)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


class DecorrelationMixin:
    """Adds the decorrelation penalty to a TRL trainer's ``compute_loss`` (see the module docstring).

    Subclasses set ``_decorrelation_config`` (their config class, also the default when the trainer gets no ``args``)
    and implement :meth:`decorrelation_batch`. With any other config, or ``decorrelation_coef=0``, no hook is registered
    and the trainer is the TRL trainer it extends.
    """

    _decorrelation_config: type = DecorrelationArguments
    # The model card's identity while the penalty is on (`name`, `tags`, `paper`): `None` keeps the TRL trainer's name
    # and paper and adds DECORRELATION_TAGS to its tags; DecPOTrainer names itself DecPO and cites the DecPO paper.
    decorrelation_card: dict | None = None

    def __init__(self, *args, **kwargs):
        base = self._trl_trainer_class()
        bound = bind_trainer_arguments(base, args, kwargs)
        model, config = bound.arguments.get("model"), bound.arguments.get("args")
        peft_config = bound.arguments.get("peft_config")
        if config is None and model is not None and issubclass(self._decorrelation_config, TrainingArguments):
            name = (self.decorrelation_card or trainer_card_identity(base))["name"]
            config = self._decorrelation_config(default_output_dir(model, name))
            bound.arguments["args"] = config
        self.decorrelation_enabled = isinstance(config, DecorrelationArguments) and config.decorrelation_coef > 0
        self.decorrelation_sites: list[ResolvedSite] = []
        self.decorrelation_capture: ActivationCapture | None = None
        self.decorrelation_injection: PenaltyInjection | None = None
        self._warned_divergence = False
        self._decorrelation_metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._set_card_identity(self.decorrelation_enabled)
        if self.decorrelation_enabled:
            enabled, ckpt_kwargs = checkpointing_settings(config)
            if enabled and "use_reentrant" not in ckpt_kwargs:
                ckpt_kwargs["use_reentrant"] = False  # explicit, whatever the torch/transformers default
                set_checkpointing_kwargs(config, ckpt_kwargs)
            # fail before any dataset processing; a `peft_config` with `modules_to_save` may move the site under its
            # wrapper (e.g. `mlp.modules_to_save.default.up_proj`): resolved once TRL has applied it
            if isinstance(model, nn.Module) and not getattr(peft_config, "modules_to_save", None):
                resolve_sites(model, config.decorrelation_layers, config.decorrelation_site)
        self._check_inputs(bound.arguments)

        with quiet_deprecated_checkpointing_calls():  # PEFT's `PeftModel.__init__` (compat assumption 16)
            super().__init__(*bound.args[1:], **bound.kwargs)

        if self.decorrelation_enabled:
            self.decorrelation_sites = resolve_sites(
                self.model, self.args.decorrelation_layers, self.args.decorrelation_site
            )
            check_gradient_path(self.model, self.decorrelation_sites)
            self._log_sites()
            self.decorrelation_capture = ActivationCapture(self.decorrelation_sites)
            self.decorrelation_injection = PenaltyInjection(self.decorrelation_sites)

    @classmethod
    def _trl_trainer_class(cls) -> type:
        """The TRL trainer this class extends: the first class after the mixin in the MRO."""
        mro = cls.__mro__
        return mro[mro.index(DecorrelationMixin) + 1]

    @classmethod
    def decorrelation_base_name(cls) -> str:
        """The TRL trainer's name (``"DPO"``, ``"SFT"``, ``"KTO"``, ``"Reward"``, ...): its own loss is logged as
        ``decorrelation/<name in lower case>_loss``."""
        return trainer_card_identity(cls._trl_trainer_class())["name"]

    # ------------------------------------------------------------------------------------------------------------------
    # Extension points
    # ------------------------------------------------------------------------------------------------------------------

    def decorrelation_batch(self, inputs: dict) -> dict:
        """The row map: ``input_ids`` (or any tensor of its ``[B, T]`` shape), ``attention_mask``, ``completion_mask``,
        ``position_ids`` of the sequences the policy forward sees, for :func:`~trl_decpo.capture.build_row_index`."""
        raise NotImplementedError

    def _check_inputs(self, arguments: dict) -> None:
        """Refuse, before the TRL trainer processes anything, inputs it would fail on late (the constructor's
        arguments by name). Nothing by default."""

    def _set_card_identity(self, enabled: bool) -> None:
        """The model card's identity: the TRL trainer's when the penalty is off; when it is on, ``decorrelation_card``,
        else the TRL trainer's name and paper with ``decpo`` and ``decorrelation`` added to its tags."""
        if not enabled:
            return
        identity = trainer_card_identity(self._trl_trainer_class())
        identity = self.decorrelation_card or {**identity, "tags": [*identity["tags"], *DECORRELATION_TAGS]}
        set_card_identity(self, **identity)

    @contextlib.contextmanager
    def decorrelation_paused(self):
        """Nothing is captured inside this block (a forward of the trainer's ``compute_loss`` that is not the policy
        forward with gradients, such as KTO's KL pass)."""
        if self.decorrelation_capture is None:
            yield
            return
        with self.decorrelation_capture.paused():
            yield

    # ------------------------------------------------------------------------------------------------------------------
    # Steps and loss
    # ------------------------------------------------------------------------------------------------------------------

    def training_step(self, *args, **kwargs):
        # TRL toggles checkpointing around its reference forwards and generation under the deprecated names
        injection = self.decorrelation_injection
        try:
            with quiet_deprecated_checkpointing_calls():
                result = super().training_step(*args, **kwargs)
        finally:  # the injection's hooks live from `compute_loss` to the end of the backward, never longer
            missed = injection.disarm() if injection is not None else []
        if missed:  # the backward's own check did not run (a loss that does not reach the penalty's layers)
            raise RuntimeError(MISSED.format(layers=missed))
        return result

    def prediction_step(self, *args, **kwargs):
        with quiet_deprecated_checkpointing_calls():
            return super().prediction_step(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.decorrelation_enabled:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        missed = self.decorrelation_injection.disarm()  # armed by a `compute_loss` whose backward never came
        if missed:
            raise RuntimeError(
                f"`compute_loss` ran again before the backward of its last loss, whose decorrelation penalty at layers "
                f"{missed} waits for that backward (reentrant activation checkpointing): backpropagate each loss before "
                "the next `compute_loss`."
            )
        args = self.args
        row_index = build_row_index(
            args.decorrelation_pooling,
            args.decorrelation_sequences,
            **self.decorrelation_batch(inputs),
            max_rows=args.decorrelation_max_rows,
        )
        with self.decorrelation_capture.capture(row_index) as rows:
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss, outputs = result if return_outputs else (result, None)
        # rows captured with gradients off in a step that has them, on a checkpointed model: inside a reentrant
        # checkpoint, their gradient injected below (anything else with such rows is refused by the penalty)
        without_grad = self.decorrelation_capture.without_grad
        training = model.training and torch.is_grad_enabled() and bool(without_grad) and is_checkpointing(model)
        deferred = frozenset(without_grad) if training else frozenset()
        penalty, per_layer = self.decorrelation_penalty(rows, training=model.training, deferred=deferred)
        # Whether the run itself is finite (the trainer's loss, then each layer's rows), checked with the logging's sync
        finite = torch.stack(
            [loss.detach().isfinite().all()] + [rows[s.layer].isfinite().all() for s in self.decorrelation_sites]
        )
        base_loss = loss.detach()
        factor = args.decorrelation_coef
        if model.training and loss_is_scaled_for_ga(self, num_items_in_batch):
            factor = factor / self.current_gradient_accumulation_steps  # as the trainer scaled its own loss
        loss = loss + factor * penalty.to(loss.dtype)
        if deferred:  # their gradient: at each layer's recomputation in the backward, `factor` x the loss's gradient
            self.decorrelation_injection.arm(sorted(deferred), row_index, rows_penalty(args), factor)
            loss = self.decorrelation_injection.probe(loss)
        self._log_decorrelation(base_loss, penalty, per_layer, finite)
        return (loss, outputs) if return_outputs else loss

    def decorrelation_penalty(self, rows: dict[int, torch.Tensor], training: bool = False, deferred=frozenset()):
        """Total penalty (summed over layers) and the per-layer values (a 1-D tensor, in `decorrelation_sites` order),
        from the rows captured by `compute_loss` (``deferred``: layers whose gradient is injected in the backward)."""
        return layer_penalties(self.decorrelation_sites, rows, self.args, training, deferred)

    def _log_decorrelation(
        self, base_loss: torch.Tensor, penalty: torch.Tensor, per_layer: torch.Tensor, finite: torch.Tensor
    ) -> None:
        """Log the trainer's own loss and the penalty (total and per layer) and react to non-finite values, with one
        gather and one host sync for everything (the values, and whether the loss and each layer's rows were finite)."""
        mode = "train" if self.model.training else "eval"
        layers = [site.layer for site in self.decorrelation_sites]
        values = torch.cat(
            (
                base_loss.reshape(1).float(),
                penalty.detach().reshape(1).float(),
                per_layer.detach().float(),
                finite.float(),
            )
        ).unsqueeze(0)
        values = self.accelerator.gather(values).mean(dim=0).tolist()  # as TRL aggregates its rewards across ranks
        base_value, values = values[0], values[1:]
        total, per_layer_values = values[0], values[1 : 1 + len(layers)]
        loss_finite, rows_finite = values[1 + len(layers)] == 1.0, values[2 + len(layers) :]
        base_name = self.decorrelation_base_name()
        if not all(math.isfinite(v) for v in per_layer_values):  # checked on the host values above: no extra sync
            bad = [layer for layer, v in zip(layers, per_layer_values, strict=True) if not math.isfinite(v)]
            diverged = [layer for layer, ok in zip(layers, rows_finite, strict=True) if ok != 1.0]
            if loss_finite and not diverged:  # the penalty is the first thing to go non-finite: stop before the step
                raise FloatingPointError(
                    f"The decorrelation penalty at layer {', '.join(map(str, bad))} is not finite "
                    f"({per_layer_values}) while the {base_name} loss and the captured activations are finite; "
                    "stopping before it reaches the weights. With `decorrelation_normalize=False` the raw Gram "
                    "overflows float32 once activations are large (about |z| > 4e7 at width 11008): use "
                    "`decorrelation_normalize=True` (scale-free), a lower learning rate, or bf16/fp32."
                )
            # The run itself diverged (as the plain trainer would): carry on as it does, and say so.
            what = f"the {base_name} loss" if not loss_finite else f"the activations captured at layers {diverged}"
            if not self._warned_divergence:  # once per trainer
                self._warned_divergence = True
                trl_class = self._trl_trainer_class().__name__
                logger.warning(
                    f"{what} became non-finite (the run is diverging, as it would with plain {base_name}), so the "
                    f"decorrelation penalty is too; training carries on as {trl_class} does. Lower the learning rate, "
                    "or train in bf16/fp32 rather than fp16."
                )
        metrics = self._decorrelation_metrics[mode]
        metrics[f"decorrelation/{self.decorrelation_base_name().lower()}_loss"].append(base_value)
        metrics["decorrelation/penalty"].append(total)
        for layer, value in zip(layers, per_layer_values, strict=True):
            metrics[f"decorrelation/layer_{layer}"].append(value)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """The decorrelation metrics of the steps since the last log, averaged (``eval_`` prefixed in evaluation, as
        TRL's trainers log their own metrics), then the TRL trainer's ``log``."""
        mode = "train" if self.model.training else "eval"
        store = getattr(self, "_decorrelation_metrics", {}).get(mode)
        if store:
            prefix = "eval_" if mode == "eval" else ""
            logs.update({f"{prefix}{key}": sum(values) / len(values) for key, values in store.items()})
            store.clear()
        super().log(logs, *args, **kwargs)

    def _log_sites(self) -> None:
        """Say which layers and site the penalty uses: at INFO level, and as a warning where the default rule chose
        something other than the usual `mlp.up_proj` / `mlp.act` (hybrid stacks, fused MLPs, mixture-of-experts)."""
        if not self.is_world_process_zero():
            return
        layers = [site.layer for site in self.decorrelation_sites]
        message = f"DecPO penalty on decoder layers {layers} at {describe_sites(self.decorrelation_sites)}"
        unusual = any(site.site.path not in KEPT_DEFAULTS for site in self.decorrelation_sites)
        if self.args.decorrelation_site is not None or not unusual:
            logger.info(message)
            return
        blocks = [site.layer for site in self.decorrelation_sites if is_moe_block(site.module)]
        if blocks:
            message += (
                f"; layers {blocks} are mixture-of-experts blocks whose routed experts expose no hidden activation at a "
                "module boundary, so the penalty uses the block's output"
            )
        logger.warning(
            f"{message} (the default rule of docs/method.md, section 2; set `decorrelation_site` / "
            "`decorrelation_layers` to choose otherwise)"
        )

    # ------------------------------------------------------------------------------------------------------------------
    # Model card
    # ------------------------------------------------------------------------------------------------------------------

    def decorrelation_settings(self) -> dict:
        """The settings that define the penalty, as written on the model card."""
        if not self.decorrelation_enabled:
            return {}
        settings = {name: getattr(self.args, name) for name in SETTING_NAMES}
        settings["decorrelation_layers"] = [site.layer for site in self.decorrelation_sites]
        settings["decorrelation_site"] = describe_sites(self.decorrelation_sites)
        return settings

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        section = ""
        if self.decorrelation_enabled:
            base = trainer_card_identity(self._trl_trainer_class())
            if self.decorrelation_card is not None:  # the card cites DecPO as the trainer's paper: cite the base too
                citation = (base["paper"] or {}).get("citation")
                cite_as, heading = (
                    f"DecPO builds on {base['name']}; cite it as:",
                    f"{self.decorrelation_card['name']} settings",
                )
            else:  # the card cites the TRL trainer's paper: cite the penalty
                citation, cite_as = DECPO_PAPER["citation"], "Cite the penalty as:"
                heading = "Decorrelation settings"
            section = settings_section(self.decorrelation_settings(), base["name"], heading, citation, cite_as)
        append_to_card(self.args.output_dir, section + callback_sections(self))
