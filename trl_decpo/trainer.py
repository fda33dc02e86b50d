# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`DecPOTrainer`: `trl.DPOTrainer` plus the decorrelation penalty, as thin glue over `capture` and `decorrelation`."""

from __future__ import annotations

import inspect
import math
import os
import textwrap

import torch
from torch import nn
from trl import DPOTrainer

from .capture import ActivationCapture, ResolvedSite, build_row_index, canonical_name, resolve_sites
from .config import DecPOConfig
from .decorrelation import decorrelation_penalty


DECPO_PAPER = {
    "title": "Encourage or Inhibit Monosemanticity? Revisit Monosemanticity from a Feature Decorrelation Perspective",
    "id": "2406.17969",
    # docstyle-ignore
    "citation": textwrap.dedent("""\
        @inproceedings{yan2024encourage,
            title        = {{Encourage or Inhibit Monosemanticity? Revisit Monosemanticity from a Feature Decorrelation Perspective}},
            author       = {Hanqi Yan and Yanzheng Xiang and Guangyi Chen and Yifei Wang and Lin Gui and Yulan He},
            year         = 2024,
            booktitle    = {Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
            url          = {https://arxiv.org/abs/2406.17969},
        }"""),
}

_DPO_INIT = inspect.signature(DPOTrainer.__init__)


def _checkpointing_settings(args) -> tuple[bool, dict]:
    """(enabled, kwargs) of activation checkpointing; transformers 5 renamed `gradient_checkpointing*`."""
    enabled = getattr(args, "activation_checkpointing", None)
    if enabled is None:
        enabled = getattr(args, "gradient_checkpointing", False)
    kwargs = getattr(args, "activation_checkpointing_kwargs", None)
    if kwargs is None:
        kwargs = getattr(args, "gradient_checkpointing_kwargs", None)
    return bool(enabled), dict(kwargs or {})


def _set_checkpointing_kwargs(args, kwargs: dict) -> None:
    for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
        if hasattr(args, name):
            setattr(args, name, dict(kwargs))


REENTRANT_ERROR = (
    "DecPO cannot train with reentrant activation checkpointing (`gradient_checkpointing_kwargs="
    "{{'use_reentrant': True}}`{why}): the policy forward then runs under no_grad, the captured activations carry no "
    "gradient and the decorrelation penalty would silently do nothing. Use `use_reentrant=False` (the default), turn "
    "`gradient_checkpointing` off, or set `decorrelation_coef=0`."
)


def check_preference_columns(dataset, name: str) -> None:
    """Refuse, before any processing, a dataset that is not a preference dataset (DPOTrainer would fail later with a
    bare ``KeyError``): TRL 1.16 needs ``chosen`` and ``rejected`` (with ``prompt``, or an implicit prompt it
    extracts as their shared prefix)."""
    if dataset is None:
        return
    if isinstance(dataset, dict):
        if name == "train_dataset":
            raise ValueError(f"`train_dataset` must be one dataset (a split), got a dict of splits {sorted(dataset)}; "
                             "pass e.g. `dataset['train']`")
        for key, part in dataset.items():
            check_preference_columns(part, f"{name}[{key!r}]")
        return
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # an IterableDataset without known features, a list of dicts, a torch dataset: peek
        try:
            first = next(iter(dataset))
        except (StopIteration, TypeError):
            return
        columns = list(first) if isinstance(first, dict) else None
    if columns is None or {"chosen", "rejected"} <= set(columns):
        return
    raise ValueError(
        f"`{name}` is not a preference dataset: it needs the columns 'prompt', 'chosen' and 'rejected' ('prompt' may "
        f"be left implicit in 'chosen' / 'rejected'); its columns are {list(columns)}. Rename them, or map the rows "
        "(the `trl-decpo train --dataset_format` option does it for the paper's tasks)."
    )


def _trl_will_force_reentrant(model, args, peft_config) -> bool:
    """TRL's `DPOTrainer.__init__` sets `use_reentrant=True` for a PEFT model under DeepSpeed ZeRO-3 with gradient
    checkpointing ("PEFT + DeepSpeed ZeRO-3 requires reentrant checkpointing"): predicted here to refuse before any
    work; `tests/test_bad_input.py` pins that TRL still does it."""
    from peft import PeftModel

    plugin = getattr(args, "deepspeed_plugin", None)
    enabled, _ = _checkpointing_settings(args)
    is_peft = peft_config is not None or isinstance(model, PeftModel)
    return bool(is_peft and enabled and plugin is not None and getattr(plugin, "zero_stage", None) == 3)


class DecPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` with the DecPO penalty (Yan et al., arXiv 2406.17969).

    The constructor is `DPOTrainer`'s. With a [`DecPOConfig`] whose `decorrelation_coef > 0`, every `compute_loss`
    captures the activations of the policy forward at the configured sites, pools them into one row per sequence (or
    token), and adds `decorrelation_coef * sum_layers penalty` to the DPO loss. The penalty (total and per layer) is
    logged as `decorrelation/penalty` and `decorrelation/layer_<i>` next to DPO's metrics, in train and eval.

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
        bound = _DPO_INIT.bind(None, *args, **kwargs)
        model = bound.arguments["model"]
        config = bound.arguments.get("args")
        if config is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
            config = DecPOConfig(f"{name.rstrip('/').split('/')[-1]}-DecPO")
            bound.arguments["args"] = config

        self.decorrelation_enabled = isinstance(config, DecPOConfig) and config.decorrelation_coef > 0
        self.decorrelation_sites: list[ResolvedSite] = []
        self.decorrelation_capture: ActivationCapture | None = None
        if not self.decorrelation_enabled:
            # Plain DPO: same tags, name and citation as DPOTrainer on the model card.
            self._tag_names = list(DPOTrainer._tag_names)
            self._name = DPOTrainer._name
            self._paper = DPOTrainer._paper
        else:
            enabled, ckpt_kwargs = _checkpointing_settings(config)
            if enabled and "use_reentrant" not in ckpt_kwargs:
                ckpt_kwargs["use_reentrant"] = False  # explicit, whatever the torch/transformers default
                _set_checkpointing_kwargs(config, ckpt_kwargs)
            self._check_not_reentrant(config, "")
            if _trl_will_force_reentrant(model, config, bound.arguments.get("peft_config")):
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
            self._check_not_reentrant(self.args, ", forced by TRL for PEFT with DeepSpeed ZeRO-3")
            self.decorrelation_sites = resolve_sites(
                self.model, self.args.decorrelation_layers, self.args.decorrelation_site
            )
            self._check_gradient_path()
            self.decorrelation_capture = ActivationCapture(self.decorrelation_sites)

    @staticmethod
    def _check_not_reentrant(args, why: str) -> None:
        enabled, kwargs = _checkpointing_settings(args)
        if enabled and kwargs.get("use_reentrant"):
            raise ValueError(REENTRANT_ERROR.format(why=why))

    def _check_gradient_path(self) -> None:
        """Refuse a PEFT setup whose trainable parameters all sit after the hooked layers (no gradient can reach)."""
        last = max(site.layer for site in self.decorrelation_sites)
        prefix = self.decorrelation_sites[0].prefix
        upstream = False
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            name = canonical_name(name)
            head = f"{prefix}." if prefix else ""
            index = name[len(head) :].split(".", 1)[0]
            if not name.startswith(head) or not index.isdigit():
                upstream = upstream or any(key in name for key in ("embed", "wte", "wpe"))
                continue
            upstream = upstream or int(index) <= last
        if not upstream:
            raise ValueError(
                f"No trainable parameter lies at or before decoder layer {last}, where the decorrelation penalty is "
                f"computed ({[s.name for s in self.decorrelation_sites]}), so it could not change any weight. Make "
                "the PEFT `target_modules` / `layers_to_transform` cover layers at or before it, or choose later "
                "`decorrelation_layers`."
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
            inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            completion_mask=inputs.get("completion_mask"),
            position_ids=inputs.get("position_ids"),
            max_rows=args.decorrelation_max_rows,
        )
        with self.decorrelation_capture.capture(row_index) as rows:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)

        penalty, per_layer = self.decorrelation_penalty(rows, training=model.training)
        loss = loss + args.decorrelation_coef * penalty.to(loss.dtype)
        self._log_decorrelation(penalty, per_layer)
        return (loss, outputs) if return_outputs else loss

    def decorrelation_penalty(self, rows: dict[int, torch.Tensor], training: bool = False):
        """Total penalty (summed over layers) and the per-layer values (a 1-D tensor, in `decorrelation_sites` order),
        from the rows captured by `compute_loss`."""
        missing = [site.name for site in self.decorrelation_sites if site.layer not in rows]
        if missing:
            raise RuntimeError(
                f"The policy forward never reached the hooked modules {missing}; the decorrelation penalty cannot be "
                "computed. Check `decorrelation_site` / `decorrelation_layers`."
            )
        if training and torch.is_grad_enabled():
            no_grad = [site.name for site in self.decorrelation_sites if not rows[site.layer].requires_grad]
            if no_grad:
                raise RuntimeError(
                    f"The activations captured at {no_grad} carry no gradient, so the decorrelation penalty would "
                    "silently do nothing. Usual causes: reentrant activation checkpointing enabled on the model "
                    "(use `use_reentrant=False`), or no trainable parameter before the hooked layer."
                )
        args = self.args
        options = dict(normalize=args.decorrelation_normalize, reduction=args.decorrelation_reduction,
                       target=args.decorrelation_target)
        layer_rows = [rows[site.layer] for site in self.decorrelation_sites]
        if len({tuple(r.shape) for r in layer_rows}) == 1:
            # Same shapes at every layer (one site): one batched computation instead of one per layer
            per_layer = decorrelation_penalty(torch.stack(layer_rows), **options)
        else:
            per_layer = torch.stack([decorrelation_penalty(r, **options) for r in layer_rows])
        return per_layer.sum(), per_layer

    def _log_decorrelation(self, penalty: torch.Tensor, per_layer: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        # One host sync for all layers, aggregated across ranks (one gather) as TRL aggregates its rewards
        values = torch.cat((penalty.detach().reshape(1), per_layer.detach())).float().unsqueeze(0)
        values = self.accelerator.gather(values).mean(dim=0).tolist()
        if not all(math.isfinite(v) for v in values):  # checked on the host values above: no extra sync
            bad = [site.layer for site, v in zip(self.decorrelation_sites, values[1:]) if not math.isfinite(v)]
            raise FloatingPointError(
                f"The decorrelation penalty at layer {', '.join(map(str, bad))} is not finite ({values[1:]}); stopping "
                "before it reaches the weights. The captured activations hold inf/NaN (a diverged model or an fp16 "
                "overflow), or `decorrelation_normalize=False` on activations large enough for its raw Gram to overflow "
                "float32 (about |z| > 4e7 at width 11008): use `decorrelation_normalize=True` (scale-free), a lower learning rate, or bf16/fp32."
            )
        metrics = self._metrics[mode]
        metrics["decorrelation/penalty"].append(values[0])
        for site, value in zip(self.decorrelation_sites, values[1:], strict=True):
            metrics[f"decorrelation/layer_{site.layer}"].append(value)

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
        settings["decorrelation_site"] = str(self.decorrelation_sites[0].site)
        return settings

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from .callbacks import MonosemanticityCallback

        section = self._settings_card_section() if self.decorrelation_enabled else ""
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, MonosemanticityCallback):
                section += callback.card_section()
        if section:
            with open(os.path.join(self.args.output_dir, "README.md"), "a", encoding="utf-8") as handle:
                handle.write(section)

    def _settings_card_section(self) -> str:
        rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in self.decorrelation_settings().items())
        return (
            "\n\n## DecPO settings\n\n"
            "The DPO loss was regularised with the DecPO activation decorrelation penalty "
            f"([{DECPO_PAPER['title']}](https://huggingface.co/papers/{DECPO_PAPER['id']})), "
            "computed by [trl-decpo](https://pypi.org/project/trl-decpo/):\n\n"
            "| setting | value |\n|---|---|\n"
            f"{rows}\n\n"
            "DecPO builds on DPO; cite DPO as:\n\n"
            f"```bibtex\n{DPOTrainer._paper['citation']}\n```\n"
        )
