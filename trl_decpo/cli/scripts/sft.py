# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo sft`: TRL's `trl sft` with the decorrelation penalty (`DecorrelatedSFTTrainer`) and
`MonosemanticityCallback`. A preference dataset trains on its chosen completions (the usual stage before DPO); a
`text`, `messages` or `prompt`/`completion` dataset is used as it is.

    trl-decpo sft --model_name_or_path HuggingFaceTB/SmolLM2-135M --dataset_name trl-lib/ultrafeedback_binarized \
        --decorrelation_coef 1.0 --decorrelation_layers 10 --output_dir outputs/smollm2-sft
"""

import argparse

from trl_decpo.cli.scripts import common


def main(script_args, training_args, model_args, dataset_args):
    from trl import get_peft_config, get_quantization_config

    from trl_decpo import DecorrelatedSFTTrainer

    resume, train_dataset, eval_dataset = common.prepare("sft", script_args, training_args, model_args, dataset_args)
    trainer = DecorrelatedSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    return common.train(trainer, eval_dataset, resume, script_args, model_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl_decpo import DecorrelatedSFTConfig

    return common.make_parser("sft", DecorrelatedSFTConfig, subparsers, prog)


if __name__ == "__main__":
    common.run_script(make_parser(), main)
