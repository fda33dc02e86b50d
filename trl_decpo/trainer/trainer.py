# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecPOTrainer`: `trl.DPOTrainer` plus the decorrelation penalty, as thin glue over `capture` and `penalty`."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.utils import logging
from trl import DPOTrainer

from ..capture import ActivationCapture, ResolvedSite, build_row_index, describe_sites, resolve_sites
from ..capture.sites import KEPT_DEFAULTS, is_moe_block
from .card import DECPO_PAPER, append_to_card, callback_sections, settings_section
from .checks import REENTRANT_ERROR, check_gradient_path, check_not_reentrant, check_preference_columns
from .compat import (
    batch_masks,
    bind_dpo_arguments,
    checkpointing_settings,
    default_output_dir,
    metrics_store,
    set_checkpointing_kwargs,
    trl_forces_reentrant,
    use_dpo_card_identity,
)
from .config import DecPOConfig
from .penalties import layer_penalties


logger = logging.get_logger(__name__)


class DecPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` with the DecPO penalty (Yan et al., arXiv 2406.17969).

    The constructor is `DPOTrainer`'s. With a [`DecPOConfig`] whose `decorrelation_coef > 0`, every `compute_loss`
    captures the activations of the policy forward at the configured sites, pools them into one row per sequence (or
    token), and adds `decorrelation_coef * sum_layers penalty` to the DPO loss. TRL's `loss` is that total, the loss
    that is optimised; the DPO loss alone is logged as `decorrelation/dpo_loss`, and the penalty (total and per layer)
    as `decorrelation/penalty` and `decorrelation/layer_<i>`, next to DPO's metrics, in train and eval.

    With a plain `DPOConfig`, or `decorrelation_coef=0`, no hook is registered and the trainer is `DPOTrainer`.

    Example:

    ```python
    from trl_decpo import DecPOConfig, DecPOTrainer

    trainer = DecPOTrainer(model=model, args=DecPOConfig("out"), train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    ```
    """

    _tag_names = ["trl", "dpo", "decpo"]
    _name = "DecPO"
    _paper = DECPO_PAPER

    def __init__(self, *args, **kwargs):
        bound = bind_dpo_arguments(args, kwargs)
        model = bound.arguments["model"]
        config = bound.arguments.get("args")
        if config is None:
            config = DecPOConfig(default_output_dir(model, "DecPO"))
            bound.arguments["args"] = config

        self.decorrelation_enabled = isinstance(config, DecPOConfig) and config.decorrelation_coef > 0
        self.decorrelation_sites: list[ResolvedSite] = []
        self.decorrelation_capture: ActivationCapture | None = None
        self._warned_divergence = False
        if not self.decorrelation_enabled:
            # Plain DPO: same tags, name and citation as DPOTrainer on the model card.
            use_dpo_card_identity(self)
        else:
            enabled, ckpt_kwargs = checkpointing_settings(config)
            if enabled and "use_reentrant" not in ckpt_kwargs:
                ckpt_kwargs["use_reentrant"] = False  # explicit, whatever the torch/transformers default
                set_checkpointing_kwargs(config, ckpt_kwargs)
            check_not_reentrant(config)
            if trl_forces_reentrant(model, config, bound.arguments.get("peft_config")):
                raise ValueError(REENTRANT_ERROR.format(why=", which TRL forces for PEFT with DeepSpeed ZeRO-3"))
            if isinstance(model, nn.Module):  # fail before any dataset processing or reference precompute
                try:
                    resolve_sites(model, config.decorrelation_layers, config.decorrelation_site)
                except ValueError:
                    # a `peft_config` with `modules_to_save` may move the site under its wrapper (e.g.
                    # `mlp.modules_to_save.default.up_proj`): resolved again once TRL has applied it
                    if not getattr(bound.arguments.get("peft_config"), "modules_to_save", None):
                        raise
        for name in ("train_dataset", "eval_dataset"):
            check_preference_columns(bound.arguments.get(name), name)

        super().__init__(*bound.args[1:], **bound.kwargs)

        if self.decorrelation_enabled:
            # TRL may force reentrant checkpointing (PEFT + DeepSpeed ZeRO-3)
            check_not_reentrant(self.args, ", forced by TRL for PEFT with DeepSpeed ZeRO-3")
            self.decorrelation_sites = resolve_sites(
                self.model, self.args.decorrelation_layers, self.args.decorrelation_site
            )
            check_gradient_path(self.model, self.decorrelation_sites)
            self._log_sites()
            self.decorrelation_capture = ActivationCapture(self.decorrelation_sites)

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
    # Loss
    # ------------------------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.decorrelation_enabled:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        args = self.args
        row_index = build_row_index(
            args.decorrelation_pooling,
            args.decorrelation_sequences,
            **batch_masks(inputs),
            max_rows=args.decorrelation_max_rows,
        )
        with self.decorrelation_capture.capture(row_index) as rows:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)

        penalty, per_layer = self.decorrelation_penalty(rows, training=model.training)
        # Whether the run itself is finite (DPO loss, then each layer's rows), checked with the logging's host sync
        finite = torch.stack(
            [loss.detach().isfinite().all()] + [rows[s.layer].isfinite().all() for s in self.decorrelation_sites]
        )
        dpo_loss = loss.detach()
        loss = loss + args.decorrelation_coef * penalty.to(loss.dtype)
        self._log_decorrelation(dpo_loss, penalty, per_layer, finite)
        return (loss, outputs) if return_outputs else loss

    def decorrelation_penalty(self, rows: dict[int, torch.Tensor], training: bool = False):
        """Total penalty (summed over layers) and the per-layer values (a 1-D tensor, in `decorrelation_sites` order),
        from the rows captured by `compute_loss`."""
        return layer_penalties(self.decorrelation_sites, rows, self.args, training)

    def _log_decorrelation(
        self, dpo_loss: torch.Tensor, penalty: torch.Tensor, per_layer: torch.Tensor, finite: torch.Tensor
    ) -> None:
        """Log the DPO loss and the penalty (total and per layer) and react to non-finite values, with one gather and
        one host sync for everything (the values, and whether the DPO loss and each layer's rows were finite)."""
        mode = "train" if self.model.training else "eval"
        layers = [site.layer for site in self.decorrelation_sites]
        values = torch.cat(
            (
                dpo_loss.reshape(1).float(),
                penalty.detach().reshape(1).float(),
                per_layer.detach().float(),
                finite.float(),
            )
        ).unsqueeze(0)
        values = self.accelerator.gather(values).mean(dim=0).tolist()  # as TRL aggregates its rewards across ranks
        dpo_value, values = values[0], values[1:]
        total, per_layer_values = values[0], values[1 : 1 + len(layers)]
        loss_finite, rows_finite = values[1 + len(layers)] == 1.0, values[2 + len(layers) :]
        if not all(math.isfinite(v) for v in per_layer_values):  # checked on the host values above: no extra sync
            bad = [layer for layer, v in zip(layers, per_layer_values, strict=True) if not math.isfinite(v)]
            diverged = [layer for layer, ok in zip(layers, rows_finite, strict=True) if ok != 1.0]
            if loss_finite and not diverged:  # the penalty is the first thing to go non-finite: stop before the step
                raise FloatingPointError(
                    f"The decorrelation penalty at layer {', '.join(map(str, bad))} is not finite "
                    f"({per_layer_values}) while the DPO loss and the captured activations are finite; stopping before "
                    "it reaches the weights. With `decorrelation_normalize=False` the raw Gram overflows float32 once "
                    "activations are large (about |z| > 4e7 at width 11008): use `decorrelation_normalize=True` "
                    "(scale-free), a lower learning rate, or bf16/fp32."
                )
            # The run itself diverged (as plain DPO would): carry on as DPOTrainer does, and say so.
            what = "the DPO loss" if not loss_finite else f"the activations captured at layers {diverged}"
            if not self._warned_divergence:  # once per trainer
                self._warned_divergence = True
                logger.warning(
                    f"{what} became non-finite (the run is diverging, as it would with plain DPO), so the decorrelation "
                    "penalty is too; DecPO carries on as DPOTrainer does. Lower the learning rate, or train in bf16/fp32 "
                    "rather than fp16."
                )
        metrics = metrics_store(self, mode)
        metrics["decorrelation/dpo_loss"].append(dpo_value)
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
        names = [
            "decorrelation_coef",
            "decorrelation_pooling",
            "decorrelation_sequences",
            "decorrelation_normalize",
            "decorrelation_reduction",
            "decorrelation_target",
            "decorrelation_max_rows",
        ]
        settings = {name: getattr(self.args, name) for name in names}
        settings["decorrelation_layers"] = [site.layer for site in self.decorrelation_sites]
        settings["decorrelation_site"] = describe_sites(self.decorrelation_sites)
        return settings

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        section = settings_section(self.decorrelation_settings()) if self.decorrelation_enabled else ""
        append_to_card(self.args.output_dir, section + callback_sections(self))
