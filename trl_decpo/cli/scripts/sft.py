# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo sft`: `trl sft` with the decorrelation penalty (`DecorrelatedSFTTrainer`) and `MonosemanticityCallback`.
A preference dataset trains on its chosen completions; TRL's SFT formats are used as they are (docs/training.md)."""

import argparse

from trl_decpo.cli.scripts import common


def main(script_args, training_args, model_args, dataset_args):
    from trl import get_peft_config, get_quantization_config

    from trl_decpo import DecorrelatedSFTTrainer

    resume, train_dataset, eval_dataset = common.prepare("sft", script_args, training_args, model_args, dataset_args)
    trainer = DecorrelatedSFTTrainer(
        model=model_args.model_name_or_path, args=training_args,
        train_dataset=train_dataset, eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args), peft_config=get_peft_config(model_args),
    )  # fmt: skip
    return common.train(trainer, eval_dataset, resume, script_args, model_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl_decpo import DecorrelatedSFTConfig

    return common.make_parser("sft", DecorrelatedSFTConfig, subparsers, prog)


if __name__ == "__main__":
    common.run_script(make_parser(), main)
