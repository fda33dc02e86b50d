# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""DecPO QLoRA fine-tune of Llama-2-7B on one GPU, measured and pushed to the Hub.

The settings (examples/configs/decpo_qlora_llama2.yaml) are those of the paper authors' scripts: 4-bit NF4 base
(bitsandbytes), LoRA r=8 alpha=16 dropout 0.05 on q_proj, v_proj, up_proj, DecPO at layer 10, beta 0.1, bf16,
non-reentrant gradient checkpointing; `MonosemanticityCallback` measures every layer on the test prompts at each
evaluation; the adapter goes to the Hub with a model card carrying the DecPO tags, citation, settings and the last
measurements. TRL's parser reads the YAML; any option on the command line overrides it:

    huggingface-cli login        # once, for the gated Llama 2 weights and the push
    python examples/decpo_qlora_llama2.py
    python examples/decpo_qlora_llama2.py --max_steps 20 --push_to_hub false   # a short try
    trl-decpo dpo --config examples/configs/decpo_qlora_llama2.yaml           # the same run, from the command line

At the end it prints the time per optimizer step and the peak GPU memory.
"""

import os
import sys
from dataclasses import dataclass, field

import torch
from datasets import load_dataset
from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from trl_decpo import DecPOConfig, DecPOTrainer, MonosemanticityCallback


CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "decpo_qlora_llama2.yaml")
DATA_FILES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Arguments(ScriptArguments):
    monosemanticity_max_samples: int = field(default=1000, metadata={"help": "At most this many probe prompts."})


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((Arguments, DecPOConfig, ModelConfig, DatasetMixtureConfig), prog="decpo_qlora_llama2.py")
    script, args, model_args, data_args = parser.parse_args_and_config(["--config", CONFIG, *argv])
    builder = DATA_FILES.get(os.path.splitext(script.dataset_name)[1])
    data = load_dataset(builder, data_files=script.dataset_name) if builder else load_dataset(script.dataset_name)
    if data_args.test_split_size:  # a dataset without a test split: hold some pairs out
        data = data[script.dataset_train_split].train_test_split(data_args.test_split_size, seed=args.seed)
    args.model_init_kwargs = {"dtype": model_args.dtype, **(args.model_init_kwargs or {})}
    trainer = DecPOTrainer(
        model=model_args.model_name_or_path,
        args=args,
        train_dataset=data[script.dataset_train_split],
        eval_dataset=data[script.dataset_test_split],
        quantization_config=get_quantization_config(model_args),  # 4-bit NF4
        peft_config=get_peft_config(model_args),  # LoRA
    )
    trainer.add_callback(MonosemanticityCallback(trainer, max_samples=script.monosemanticity_max_samples))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    trainer.save_model(args.output_dir)
    trainer.create_model_card(model_name=os.path.basename(os.path.normpath(args.output_dir)))  # DecPO settings too
    if args.push_to_hub:
        trainer.push_to_hub(dataset_name=script.dataset_name)
    # training time only (the trainer's own `train_runtime`), not loading, saving or pushing
    runtime = next(h["train_runtime"] for h in reversed(trainer.state.log_history) if "train_runtime" in h)
    steps = max(trainer.state.global_step, 1)
    line = (
        f"{steps} optimizer steps in {runtime:.0f} s of training ({runtime / steps:.2f} s/step, evaluations included)"
    )
    if torch.cuda.is_available():
        line += f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    trainer.accelerator.print(line)
    return trainer


if __name__ == "__main__":
    main()
