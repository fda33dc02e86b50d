# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo train`` parser: ``TrlParser`` over ``trl dpo``'s dataclasses and ``DecPOConfig`` (with ``--trainer
sft|kto|reward``: that TRL script's config, ``DecorrelatedSFTConfig``, ...), with

* a short ``--help`` (the decorrelation options first, then the trainer and data options and the most used options of
  the TRL script) and a full ``--help-all`` (every option, the decorrelation ones still first);
* mixed precision turned off, with one line, on a machine without a GPU (TRL turns bf16 on by default, and
  transformers refuses bf16 without a GPU unless ``--use_cpu true``);
* the deprecated ``gradient_checkpointing*`` options (TRL's defaults and documentation still use them) passed on under
  their new ``activation_checkpointing*`` names, without transformers' warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .base import CommandParser


MIXED_PRECISION = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval")
# transformers 5 deprecated the old names (removed in v6); older 5.x releases have the old ones only
CHECKPOINTING_RENAMES = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)

# TRL script options shown by the short help, after the decorrelation and data options (all of them: --help-all); those
# a trainer's config lacks are skipped
COMMON_OPTIONS = (
    "model_name_or_path",
    "dtype",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "load_in_4bit",
    "output_dir",
    "beta",
    "loss_type",
    "desirable_weight",
    "undesirable_weight",
    "packing",
    "completion_only_loss",
    "assistant_only_loss",
    "center_rewards_coefficient",
    "lora_task_type",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "eval_strategy",
    "eval_steps",
    "logging_steps",
    "save_strategy",
    "bf16",
    "use_cpu",
    "report_to",
    "resume_from_checkpoint",
    "push_to_hub",
    "hub_model_id",
    "seed",
)


def gpu_available() -> bool:
    """Whether torch sees an accelerator that mixed precision can run on (CUDA, MPS, XPU, NPU, HPU or XLA)."""
    from transformers import utils

    checks = ("cuda", "mps", "xpu", "npu", "hpu", "xla")
    return any(getattr(utils, f"is_torch_{name}_available", lambda: False)() for name in checks)


def bf16_on_the_cpu(namespace: argparse.Namespace, prog: str) -> None:
    """``--use_cpu true``: TRL's default bf16 (``bf16`` not given) is kept only on a CPU that runs bf16 natively
    (:func:`trl_decpo.precision.cpu_has_native_bf16`) and turned off, in one line, on one that does not, where bf16
    autocast is many times slower than float32; an explicit ``--bf16 true`` is kept, with one line saying it is
    slow there."""
    if getattr(namespace, "bf16", False) is False or getattr(namespace, "fp16", False):
        return
    from ..precision import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return
    if namespace.bf16 is None:
        namespace.bf16 = False
        print(
            f"{prog}: this CPU has no native bf16 (many times slower than float32 there): TRL's default bf16 turned "
            "off, training in float32 (--bf16 true keeps bf16)",
            file=sys.stderr,
        )
    else:
        print(f"{prog}: --bf16 true on a CPU without native bf16: training will be many times slower", file=sys.stderr)


def turn_off_mixed_precision_without_gpu(namespace: argparse.Namespace, prog: str) -> None:
    """No GPU and no ``--use_cpu true``: turn bf16/fp16 off (asked for, or TRL's default bf16) and say so in one line,
    instead of transformers' "Your setup doesn't support bf16/gpu" error. With ``--use_cpu true`` the precision
    options are kept as given (bf16 then runs as CPU autocast, as with ``trl dpo``), except TRL's default bf16 on a
    CPU without native bf16 (:func:`bf16_on_the_cpu`)."""
    if getattr(namespace, "use_cpu", False):
        bf16_on_the_cpu(namespace, prog)
        return
    if gpu_available():
        return
    on = [name for name in MIXED_PRECISION if getattr(namespace, name, None)]
    if getattr(namespace, "bf16", False) is None and not getattr(namespace, "fp16", False):
        on.insert(0, "bf16")  # DPOConfig's default: bf16 unless fp16
    if not on:
        return
    for name in MIXED_PRECISION:
        if hasattr(namespace, name):
            setattr(namespace, name, False)
    print(
        f"{prog}: no GPU found: {', '.join(on)} turned off, training in float32 on the CPU "
        "(--use_cpu true keeps your precision settings on the CPU)",
        file=sys.stderr,
    )


def rename_checkpointing_options(namespace: argparse.Namespace) -> None:
    """Give the ``gradient_checkpointing*`` values (TRL's default ``True``, or the user's) to the
    ``activation_checkpointing*`` options when those exist and are unset, as transformers itself would, minus its
    deprecation warning on every run."""
    for old, new in CHECKPOINTING_RENAMES:
        if hasattr(namespace, new) and getattr(namespace, new) is None and getattr(namespace, old, None) is not None:
            setattr(namespace, new, getattr(namespace, old))
            setattr(namespace, old, None)


class _FullHelp(argparse.Action):
    """``--help-all``: every option (argparse's ``-h`` prints the short help)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help(full=True)
        parser.exit()


class TrainParser(CommandParser):
    """The ``trl-decpo train`` parser (see the module docstring) of one ``trainer`` (``dpo``, ``sft``, ...): the options
    of its TRL script (``trl dpo``, config ``trl_config_name``) and of its decorrelated config (``config_name``).
    ``decpo_fields`` and ``data_fields`` name the options the help lists first."""

    def __init__(
        self,
        dataclass_types,
        decpo_fields=(),
        data_fields=(),
        trainer: str = "dpo",
        config_name: str = "DecPOConfig",
        trl_config_name: str = "DPOConfig",
        **kwargs,
    ):
        super().__init__(dataclass_types, **kwargs)
        self.trainer = trainer
        self.script = f"trl {trainer}"
        self.trl_config_name = trl_config_name
        what = "DecPO options" if trainer == "dpo" else "decorrelation options"
        self.sections = {
            f"{what} ({config_name})": set(decpo_fields),
            "trainer, data, probes and the output folder": set(data_fields),
        }
        self.add_argument("--help-all", action=_FullHelp, help="Show every option (about 300) and exit.")

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args, namespace)
        turn_off_mixed_precision_without_gpu(namespace, self.prog)
        rename_checkpointing_options(namespace)
        return namespace, unknown

    def print_help(self, file=None, full: bool = False):
        self._print_message(self.format_help(full), file or sys.stdout)

    def format_help(self, full: bool = False) -> str:
        """Usage, description, then the options by section: DecPO, data, and the most used (``full``: all the) others
        of ``trl dpo``."""
        groups: dict[str, list] = {"help": [], **{title: [] for title in self.sections}}
        common, rest = [], []
        for action in self._actions:
            if action.dest in ("help", "help_all"):
                groups["help"].append(action)
                continue
            title = next((t for t, dests in self.sections.items() if action.dest in dests), None)
            if title is not None:
                groups[title].append(action)
            elif action.dest in COMMON_OPTIONS:
                common.append(action)
            else:
                rest.append(action)
        common.sort(key=lambda action: COMMON_OPTIONS.index(action.dest))
        for actions in groups.values():  # `--trainer` first: it decides the other options
            actions.sort(key=lambda action: action.dest != "trainer")
        config = self.trl_config_name
        flag = "" if self.trainer == "dpo" else f" --trainer {self.trainer}"
        if full:
            groups[f"options of `{self.script}` ({config}, transformers' TrainingArguments, ModelConfig)"] = (
                common + rest
            )
            epilog = "Any option can also come from a YAML file: --config FILE.yaml (the command line wins)."
        else:
            groups[f"most used options of `{self.script}`"] = common
            epilog = (
                f"{len(rest)} more options of `{self.script}` ({config}, transformers' TrainingArguments, "
                f"ModelConfig's PEFT/LoRA and quantization): `trl-decpo train{flag} --help-all`. Any option can also "
                "come from a YAML file: --config FILE.yaml (the command line wins)."
            )
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        for title, actions in groups.items():
            formatter.start_section(title)
            formatter.add_arguments(actions)
            formatter.end_section()
        formatter.add_text(epilog)
        return formatter.format_help()


def own_fields(cls, parent) -> list[str]:
    """The fields ``cls`` adds to ``parent``."""
    inherited = {f.name for f in dataclasses.fields(parent)}
    return [f.name for f in dataclasses.fields(cls) if f.name not in inherited]
