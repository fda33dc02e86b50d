# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` commands: the module that runs each, its one-line help and its short usage line. No heavy import:
``trl-decpo --help`` reads this table alone."""

from __future__ import annotations

from dataclasses import dataclass


TRAIN = "%(prog)s --model_name_or_path MODEL --dataset_name DATASET --output_dir DIR [OPTIONS] [--config FILE.yaml] "
TRAIN += "[--accelerate_config NAME_OR_FILE]"


@dataclass(frozen=True)
class Command:
    module: str  # a training script (`make_parser(subparsers, prog)`, `main(4 dataclasses)`), launched through
    # accelerate; or a measuring command of `trl_decpo.cli` (`make_parser(prog)`, `main(parser, argv)`), run in-process
    help: str
    usage: str = TRAIN  # argparse's own usage line would list every option

    @property
    def is_training(self) -> bool:
        return self.module.startswith("trl_decpo.cli.scripts.")


COMMANDS = {
    "dpo": Command("trl_decpo.cli.scripts.dpo", "DPO + the DecPO penalty (`trl dpo`'s options and DecPOConfig's)."),
    "sft": Command(
        "trl_decpo.cli.scripts.sft",
        "SFT + the decorrelation penalty (`trl sft`'s options and DecorrelatedSFTConfig's); a preference dataset "
        "trains on its chosen completions.",
    ),
    "kto": Command(
        "trl_decpo.cli.scripts.kto",
        "KTO + the decorrelation penalty (`trl kto`'s options and DecorrelatedKTOConfig's); a preference dataset is "
        "unpaired.",
    ),
    "reward": Command(
        "trl_decpo.cli.scripts.reward",
        "A reward model + the decorrelation penalty (`trl reward`'s options and DecorrelatedRewardConfig's).",
    ),
    "measure": Command(
        "trl_decpo.cli.measure",
        "Per-layer feature decorrelation (FD), its anisotropy-free control and activation sparsity of one model.",
        "%(prog)s MODEL --prompts PROMPTS [--output_dir DIR] [OPTIONS]",
    ),
    "compare": Command(
        "trl_decpo.cli.compare",
        "FD, its control and sparsity of a BASE model and TUNED models (checkpoints or PEFT adapters), with changes "
        "against BASE.",
        "%(prog)s BASE TUNED [TUNED ...] --prompts PROMPTS [--output_dir DIR] [OPTIONS]",
    ),
    "top-tokens": Command(
        "trl_decpo.cli.top_tokens",
        "The top vocabulary tokens of a layer's most predominant hidden dimensions (paper Table 1), ranked by mean "
        "|activation| on `--prompts` (probe tokens per `--pooling`) or by input-weight change against `--base`.",
        "%(prog)s MODEL --layer LAYER (--prompts PROMPTS | --base BASE) [OPTIONS]",
    ),
    "evaluate": Command(
        "trl_decpo.cli.evaluate",
        "Reward accuracy, margin and a task score of a BASE model and MODELS (checkpoints or PEFT adapters on BASE), "
        "with paired bootstrap differences.",
        "%(prog)s BASE MODEL [MODEL ...] [--dataset PAIRS] [--scorer SCORER] [--output_dir DIR] [OPTIONS]",
    ),
}
