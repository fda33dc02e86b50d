# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecorrelationMixin`: the decorrelation penalty as a capability of any TRL trainer.

A decorrelated trainer is ``class X(DecorrelationMixin, trl.SomeTrainer)`` with a config that carries the shared
``decorrelation_*`` fields (:class:`~trl_decpo.trainer.fields.DecorrelationArguments`) and one method, its *row map*:
:meth:`DecorrelationMixin.decorrelation_batch`, the tensors of a batch that locate its sequences (``input_ids`` or a
tensor of the same shape, ``attention_mask``, ``completion_mask``, ``position_ids``), given to
:func:`~trl_decpo.capture.build_row_index`. The mixin wraps ``compute_loss``: hooks live only around the trainer's own
``compute_loss``, keep the first forward of each hooked module (the policy forward with gradients; a trainer whose first
forward is something else pauses the capture around it), and ``coef * penalty`` is added to the loss, scaled for
gradient accumulation exactly when the trainer scales its own loss.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from transformers.utils import logging

from ..capture import ActivationCapture, ResolvedSite, build_row_index, describe_sites, resolve_sites
from ..trainer.card import append_to_card, callback_sections, trainer_settings_section
from ..trainer.checks import REENTRANT_ERROR, check_gradient_path, check_not_reentrant
from ..trainer.compat import (
    checkpointing_settings,
    loss_is_scaled_for_ga,
    metrics_store,
    set_checkpointing_kwargs,
    trl_forces_reentrant,
)
from ..trainer.fields import DecorrelationArguments
from ..trainer.penalties import layer_penalties


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
)


class DecorrelationMixin:
    """Adds the decorrelation penalty to a TRL trainer's ``compute_loss`` (see the module docstring).

    Subclasses set ``_decorrelation_config`` (their config class) and implement :meth:`decorrelation_batch`. With any
    other config, or ``decorrelation_coef=0``, no hook is registered and the trainer is the TRL trainer it extends.
    """

    _decorrelation_config: type = DecorrelationArguments

    def __init__(self, *args, **kwargs):
        base = self._trl_trainer_class()
        bound = inspect.signature(base.__init__).bind(None, *args, **kwargs)
        model, config = bound.arguments.get("model"), bound.arguments.get("args")
        peft_config = bound.arguments.get("peft_config")
        self.decorrelation_enabled = isinstance(config, DecorrelationArguments) and config.decorrelation_coef > 0
        self.decorrelation_sites: list[ResolvedSite] = []
        self.decorrelation_capture: ActivationCapture | None = None
        self._warned_divergence = False
        if self.decorrelation_enabled:
            self._tag_names = [*base._tag_names, *DECORRELATION_TAGS]
            enabled, ckpt_kwargs = checkpointing_settings(config)
            if enabled and "use_reentrant" not in ckpt_kwargs:
                ckpt_kwargs["use_reentrant"] = False  # explicit, whatever the torch/transformers default
                set_checkpointing_kwargs(config, ckpt_kwargs)
            check_not_reentrant(config)
            if trl_forces_reentrant(model, config, peft_config):
                raise ValueError(REENTRANT_ERROR.format(why=", which TRL forces for PEFT with DeepSpeed ZeRO-3"))
            if isinstance(model, nn.Module) and not getattr(peft_config, "modules_to_save", None):
                resolve_sites(model, config.decorrelation_layers, config.decorrelation_site)  # fail before any work
        super().__init__(*bound.args[1:], **bound.kwargs)
        if self.decorrelation_enabled:
            check_not_reentrant(self.args, ", forced by TRL for PEFT with DeepSpeed ZeRO-3")
            self.decorrelation_sites = resolve_sites(
                self.model, self.args.decorrelation_layers, self.args.decorrelation_site
            )
            check_gradient_path(self.model, self.decorrelation_sites)
            if self.is_world_process_zero():
                layers = [site.layer for site in self.decorrelation_sites]
                logger.info(
                    f"Decorrelation penalty on decoder layers {layers} at {describe_sites(self.decorrelation_sites)}"
                )
            self.decorrelation_capture = ActivationCapture(self.decorrelation_sites)

    @classmethod
    def _trl_trainer_class(cls) -> type:
        """The TRL trainer this class extends: the first class after the mixin in the MRO."""
        mro = cls.__mro__
        return mro[mro.index(DecorrelationMixin) + 1]

    # ------------------------------------------------------------------------------------------------------------------
    # Row map and loss
    # ------------------------------------------------------------------------------------------------------------------

    def decorrelation_batch(self, inputs: dict) -> dict:
        """The row map: ``input_ids`` (or any tensor of its ``[B, T]`` shape), ``attention_mask``, ``completion_mask``,
        ``position_ids`` of the sequences the policy forward sees, for :func:`~trl_decpo.capture.build_row_index`."""
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.decorrelation_enabled:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
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

        penalty, per_layer = layer_penalties(self.decorrelation_sites, rows, args, training=model.training)
        finite = torch.stack(
            [loss.detach().isfinite().all()] + [rows[s.layer].isfinite().all() for s in self.decorrelation_sites]
        )
        scaled = penalty.to(loss.dtype)
        if model.training and loss_is_scaled_for_ga(self, num_items_in_batch):
            scaled = scaled / self.current_gradient_accumulation_steps  # as the trainer scaled its own loss
        loss = loss + args.decorrelation_coef * scaled
        self._log_decorrelation(penalty, per_layer, finite)
        return (loss, outputs) if return_outputs else loss

    def _log_decorrelation(self, penalty: torch.Tensor, per_layer: torch.Tensor, finite: torch.Tensor) -> None:
        """Log the penalty (total and per layer) with one gather, and stop when it is the first thing non-finite."""
        mode = "train" if self.model.training else "eval"
        layers = [site.layer for site in self.decorrelation_sites]
        values = torch.cat((penalty.detach().reshape(1).float(), per_layer.detach().float(), finite.float()))
        values = self.accelerator.gather(values.unsqueeze(0)).mean(dim=0).tolist()
        total, per_layer_values = values[0], values[1 : 1 + len(layers)]
        loss_finite, rows_finite = values[1 + len(layers)] == 1.0, values[2 + len(layers) :]
        if not all(math.isfinite(v) for v in per_layer_values):
            bad = [layer for layer, v in zip(layers, per_layer_values, strict=True) if not math.isfinite(v)]
            diverged = [layer for layer, ok in zip(layers, rows_finite, strict=True) if ok != 1.0]
            if loss_finite and not diverged:
                raise FloatingPointError(
                    f"The decorrelation penalty at layer {', '.join(map(str, bad))} is not finite ({per_layer_values}) "
                    f"while the {self._name} loss and the captured activations are finite; stopping before it reaches "
                    "the weights. Use `decorrelation_normalize=True` (scale-free), a lower learning rate, or bf16/fp32."
                )
            if not self._warned_divergence:
                self._warned_divergence = True
                what = "the loss" if not loss_finite else f"the activations captured at layers {diverged}"
                logger.warning(
                    f"{what} became non-finite (the run is diverging, as it would without the penalty), so the "
                    f"decorrelation penalty is too; training carries on as {self._trl_trainer_class().__name__} does."
                )
        metrics = metrics_store(self, mode)
        metrics["decorrelation/penalty"].append(total)
        for layer, value in zip(layers, per_layer_values, strict=True):
            metrics[f"decorrelation/layer_{layer}"].append(value)

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
        section = (
            trainer_settings_section(self.decorrelation_settings(), self._name) if self.decorrelation_enabled else ""
        )
        append_to_card(self.args.output_dir, section + callback_sections(self))
