# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Which trainer ``trl-decpo train`` runs (``--trainer dpo|sft|kto|reward``): its config and TRL's, its data in words,
the choice read from the command line or the YAML before any parser is built, and what to run after it."""

from __future__ import annotations

import os

from trl import DPOConfig, KTOConfig, RewardConfig, SFTConfig

from ..trainer import DecPOConfig, DecPOTrainer
from ..trainers import (
    DecorrelatedKTOConfig,
    DecorrelatedKTOTrainer,
    DecorrelatedRewardConfig,
    DecorrelatedRewardTrainer,
    DecorrelatedSFTConfig,
    DecorrelatedSFTTrainer,
)
from .data import TRAINERS


DESCRIPTIONS = {"sft": "SFT", "kto": "KTO", "reward": "a reward model (AutoModelForSequenceClassification, one label)"}
DATA_HELP = {
    "sft": "A preference dataset (--dataset_name, --dataset_format) is mapped to prompt/completion with the chosen "
    "completion: SFT on the preferred completions, the usual stage before DPO. A 'text', 'messages' or "
    "'prompt'/'completion' dataset is used as it is.",
    "kto": "A preference dataset (--dataset_name, --dataset_format) is unpaired: one desirable row (chosen) and one "
    "undesirable row (rejected) per pair. A 'prompt'/'completion'/'label' dataset is used as it is.",
    "reward": "It trains on the chosen/rejected pairs of a preference dataset (--dataset_name, --dataset_format).",
}
# --trainer -> (its config, TRL's config, the decorrelated trainer)
TRAINER_CLASSES = {
    "dpo": (DecPOConfig, DPOConfig, DecPOTrainer),
    "sft": (DecorrelatedSFTConfig, SFTConfig, DecorrelatedSFTTrainer),
    "kto": (DecorrelatedKTOConfig, KTOConfig, DecorrelatedKTOTrainer),
    "reward": (DecorrelatedRewardConfig, RewardConfig, DecorrelatedRewardTrainer),
}


def choose_trainer(argv: list[str]) -> str:
    """The trainer `argv` asks for, read before the parser is built: the last ``--trainer NAME`` /
    ``--trainer=NAME``, else ``trainer:`` in the ``--config FILE`` (when it reads as a YAML mapping; TrlParser reports
    a bad file), else ``dpo``. An unknown name is a ``ValueError`` naming ``--trainer`` and the allowed values."""
    chosen, source = None, "--trainer"
    for i, arg in enumerate(argv):
        if arg == "--trainer":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"argument --trainer: expected one of {', '.join(TRAINERS)}")
            chosen = argv[i + 1]
        elif arg.startswith("--trainer="):
            chosen = arg.split("=", 1)[1]
    if chosen is None and "--config" in argv[:-1]:
        path = argv[argv.index("--config") + 1]
        try:
            import yaml

            with open(path, encoding="utf-8") as handle:
                config = yaml.safe_load(handle)
        except (OSError, ValueError, yaml.YAMLError):
            config = None
        if isinstance(config, dict) and config.get("trainer") is not None:
            chosen, source = str(config["trainer"]), f"--trainer (`trainer:` in {path})"
    chosen = "dpo" if chosen is None else chosen
    if chosen not in TRAINERS:
        python_only = (
            "; GRPO and RLOO need a reward function: use DecorrelatedGRPOTrainer / DecorrelatedRLOOTrainer from "
            "Python (docs/trainers.md)"
            if chosen.lower() in ("grpo", "rloo")
            else ""
        )
        raise ValueError(
            f"argument {source}: invalid choice: {chosen!r} (choose from {', '.join(map(repr, TRAINERS))}){python_only}"
        )
    return chosen


def next_steps(name: str, script_args, training_args, model_args) -> str:
    """What to run next with the saved model of ``--trainer name`` (printed after training)."""
    out, base = training_args.output_dir, model_args.model_name_or_path
    prompts = script_args.monosemanticity_probes or "PROMPTS"
    adapter = " (an adapter: merge it into its base model first)" if model_args.use_peft else ""
    compare = f"  FD and sparsity per layer against the base model: trl-decpo compare {base} {out} --prompts {prompts}"
    if name == "reward":
        lines = [
            f"  score text with it: AutoModelForSequenceClassification.from_pretrained({out!r}){adapter}, one reward "
            "per sequence",
            f"  reward model of an online trainer: DecorrelatedGRPOTrainer(..., reward_funcs={out!r}){adapter} "
            "(Python; docs/trainers.md)",
        ]
    elif name == "sft":
        lines = [
            compare,
            f"  DPO from this model, the usual next stage: trl-decpo train --model_name_or_path {out}{adapter} "
            f"--dataset_name {script_args.dataset_name} --output_dir {os.path.normpath(out)}-dpo",
        ]
    else:
        lines = [
            compare,
            f"  reward accuracy and margin against the base model: trl-decpo evaluate {base} {out} --dataset PAIRS",
        ]
    return "Next steps:\n" + "\n".join(lines)
