# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` commands: which module runs each, its one-line help and its short usage line.

Kept free of heavy imports: ``trl-decpo --help`` reads this table alone, and a command's module (with torch, TRL and
transformers) is imported only when that command runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # the module of `trl_decpo.cli` with the command's `make_parser(prog)` and `main(parser, argv)`
    help: str
    usage: str  # argparse's own usage line would list every option (about 150 lines for `train`)


COMMANDS = {
    "train": Command(
        "train",
        "DPO + the DecPO penalty (`trl dpo`'s options and DecPOConfig's), measured and saved; `--trainer sft|kto|reward` "
        "adds the penalty to SFT, KTO or reward-model training instead.",
        "%(prog)s --model_name_or_path MODEL --dataset_name DATASET --output_dir DIR [OPTIONS] [--config FILE.yaml]",
    ),
    "measure": Command(
        "measure",
        "Per-layer feature decorrelation (FD), its anisotropy-free control and activation sparsity of one model.",
        "%(prog)s MODEL --prompts PROMPTS [--output_dir DIR] [OPTIONS]",
    ),
    "compare": Command(
        "compare",
        "FD, its control and sparsity of a BASE model and TUNED models (checkpoints or PEFT adapters), with changes "
        "against BASE.",
        "%(prog)s BASE TUNED [TUNED ...] --prompts PROMPTS [--output_dir DIR] [OPTIONS]",
    ),
    "top-tokens": Command(
        "top_tokens",
        "The top vocabulary tokens of a layer's most predominant hidden dimensions (paper Table 1): ranked by mean "
        "|activation| over the probe tokens `--pooling` picks in `--prompts`, or by input-weight change against "
        "`--base` (then `--pooling` does not apply).",
        "%(prog)s MODEL --layer LAYER (--prompts PROMPTS | --base BASE) [OPTIONS]",
    ),
    "evaluate": Command(
        "evaluate",
        "Reward accuracy, margin and a task score of a BASE model and MODELS (checkpoints or PEFT adapters on BASE), "
        "with paired bootstrap differences.",
        "%(prog)s BASE MODEL [MODEL ...] [--dataset PAIRS] [--scorer SCORER] [--output_dir DIR] [OPTIONS]",
    ),
}
