# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo reward`: `trl reward` with the decorrelation penalty (`DecorrelatedRewardTrainer`: a sequence classifier
with one label, its pad token set) and `MonosemanticityCallback`, on the chosen/rejected pairs; docs/training.md."""

import argparse

from trl_decpo.cli.scripts import common


def main(script_args, training_args, model_args, dataset_args):
    from trl import get_peft_config, get_quantization_config

    from trl_decpo import DecorrelatedRewardTrainer

    resume, train_dataset, eval_dataset = common.prepare(
        "reward", script_args, training_args, model_args, dataset_args
    )
    if model_args.use_peft and model_args.lora_task_type == "CAUSAL_LM":  # ModelConfig's default; a reward model
        model_args.lora_task_type = "SEQ_CLS"  # is a sequence classifier, its `score` head trained in full
    trainer = DecorrelatedRewardTrainer(
        model=model_args.model_name_or_path, args=training_args,
        train_dataset=train_dataset, eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args), peft_config=get_peft_config(model_args),
    )  # fmt: skip
    return common.train(trainer, eval_dataset, resume, script_args, model_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl_decpo import DecorrelatedRewardConfig

    return common.make_parser("reward", DecorrelatedRewardConfig, subparsers, prog)


if __name__ == "__main__":
    common.run_script(make_parser(), main)
