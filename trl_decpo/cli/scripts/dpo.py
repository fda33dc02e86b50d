# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo dpo`: `trl dpo` with the DecPO penalty (`DecPOTrainer`) and `MonosemanticityCallback`; examples in
docs/training.md."""

import argparse

from trl_decpo.cli.scripts import common


def main(script_args, training_args, model_args, dataset_args):
    from trl import get_peft_config, get_quantization_config

    from trl_decpo import DecPOTrainer
    from trl_decpo.compat import ignore_bool_buffers_in_ddp

    resume, train_dataset, eval_dataset = common.prepare("dpo", script_args, training_args, model_args, dataset_args)
    trainer = DecPOTrainer(
        model=model_args.model_name_or_path, args=training_args,
        train_dataset=train_dataset, eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args), peft_config=get_peft_config(model_args),
    )  # fmt: skip
    if script_args.ignore_bias_buffers:  # torch distributed hack, as in `trl dpo`
        ignore_bool_buffers_in_ddp(trainer.model)
    return common.train(trainer, eval_dataset, resume, script_args, model_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl_decpo import DecPOConfig

    return common.make_parser("dpo", DecPOConfig, subparsers, prog)


if __name__ == "__main__":
    common.run_script(make_parser(), main)
