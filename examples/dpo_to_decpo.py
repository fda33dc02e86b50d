# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""From TRL's DPO to DecPO: a plain DPO script in which only the imports change.

Everything else (model, tokenizer, preference data, config fields, `train()`) is what a `trl.DPOTrainer` script
already has. TRL's `loss` is then the optimised total, DPO's loss plus the weighted penalty; the two parts are logged
as `decorrelation/dpo_loss` and `decorrelation/penalty`, next to DPO's rewards. It trains on CPU, on a
small preference dataset from `trl_decpo.testing`, with a tiny random Llama from there too (offline) or `--model`:

    python examples/dpo_to_decpo.py
    python examples/dpo_to_decpo.py --model HuggingFaceTB/SmolLM2-135M-Instruct   # any causal LM folder or Hub id
"""

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# from trl import DPOConfig, DPOTrainer
from trl_decpo import DecPOConfig as DPOConfig
from trl_decpo import DecPOTrainer as DPOTrainer
from trl_decpo.testing import tiny_model_dir, tiny_preference_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: a tiny random Llama)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output-dir", default="outputs/dpo_to_decpo")
    args = parser.parse_args(argv)

    model_path = args.model or tiny_model_dir()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    training_args = DPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
    )
    trainer = DPOTrainer(
        model=model, args=training_args, train_dataset=tiny_preference_dataset(16), processing_class=tokenizer
    )
    trainer.train()

    coef = training_args.decorrelation_coef
    for log in trainer.state.log_history:
        if "loss" in log:
            print(
                f"step {log['step']}: loss {log['loss']:.4f} = DPO loss {log['decorrelation/dpo_loss']:.4f} + "
                f"{coef:g} x penalty {log['decorrelation/penalty']:.4f}"
            )
    return trainer


if __name__ == "__main__":
    main()
