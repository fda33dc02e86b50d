# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo kto`: `trl kto` with the decorrelation penalty (`DecorrelatedKTOTrainer`) and `MonosemanticityCallback`.
A preference dataset is unpaired (a desirable `chosen` row and an undesirable `rejected` one per pair, after the test
split is held out); a `prompt`/`completion`/`label` dataset is used as it is. Examples: docs/training.md."""

import argparse

from trl_decpo.cli.scripts import common


def main(script_args, training_args, model_args, dataset_args):
    from trl import get_peft_config, get_quantization_config

    from trl_decpo import DecorrelatedKTOTrainer

    resume, train_dataset, eval_dataset = common.prepare("kto", script_args, training_args, model_args, dataset_args)
    trainer = DecorrelatedKTOTrainer(
        model=model_args.model_name_or_path, args=training_args,
        train_dataset=train_dataset, eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args), peft_config=get_peft_config(model_args),
    )  # fmt: skip
    return common.train(trainer, eval_dataset, resume, script_args, model_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl_decpo import DecorrelatedKTOConfig

    return common.make_parser("kto", DecorrelatedKTOConfig, subparsers, prog)


if __name__ == "__main__":
    common.run_script(make_parser(), main)
