# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""DecPO QLoRA fine-tune of Llama-2-7B on one GPU, measured and pushed to the Hub.

The settings (examples/configs/decpo_qlora_llama2.yaml) are those of the paper authors' scripts: 4-bit NF4 base
(bitsandbytes), LoRA r=8 alpha=16 dropout 0.05 on q_proj, v_proj, up_proj, DecPO at layer 10, beta 0.1, bf16,
non-reentrant gradient checkpointing; `MonosemanticityCallback` measures every layer on the test prompts at each
evaluation; the adapter goes to the Hub with a model card carrying the DecPO tags, citation, settings and the last
measurements. Any option of `trl-decpo train` overrides the YAML:

    huggingface-cli login        # once, for the gated Llama 2 weights and the push
    python examples/decpo_qlora_llama2.py
    python examples/decpo_qlora_llama2.py --max_steps 20 --push_to_hub false   # a short try

At the end it prints the time per optimizer step and the peak GPU memory.
"""

import os
import sys

from trl_decpo.cli.train import make_parser, run


CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "decpo_qlora_llama2.yaml")


def main(argv=None):
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", CONFIG, *argv]
    script_args, training_args, model_args = make_parser(prog="decpo_qlora_llama2.py").parse_args_and_config(argv)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = run(script_args, training_args, model_args)
    # Training time only (the trainer's own `train_runtime`), not loading, saving or pushing.
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
