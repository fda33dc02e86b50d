# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Training-step time of DecPO against DPO, interleaved in one process (docs/benchmarks.md).

Three trainers on the same model weights, data and batch: `DecPOTrainer` with `decorrelation_coef=0` (exactly
`DPOTrainer`, no hooks), with the penalty on one layer (the default, `num_layers // 3`), and on every layer. Each
timed unit is `trainer.training_step` (forward of policy and reference, loss, penalty, backward) on the same
collated batch; the optimizer step, identical in all arms, is left out, so the ratios overstate the overhead. The arms
take turns one step at a time (the order rotating every turn, `--rounds` x `--steps` turns) after a warm-up; the ratio
is the median of the paired ratios (each DecPO step over the DPO step of the same turn), which cancels the machine's
slow drifts; the ratio of the medians is reported too.

From the repository root:

    python -m benchmarks.step_time --model tiny                      # a tiny Llama (trl_decpo.testing, width 64)
    python -m benchmarks.step_time --model smollm2 --threads 2       # SmolLM2-135M-Instruct (offline copy)
    python -m benchmarks.step_time --model PATH --device cuda        # any model, on GPU
    python -m benchmarks.step_time --model tiny --breakdown          # + each piece of the overhead, timed in a step
    python -m benchmarks.step_time --model smollm2 --threads 2 --completion-tokens-only   # TRL's LM head as on a GPU

One JSON line per arm on stdout, then a summary line with the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time


def tiny_model_dir() -> str:
    """The benchmarks' tiny model: a random 4-layer Llama of width 64 (MLP 172) and a word-level tokenizer, saved to a
    temporary folder."""
    from trl_decpo.testing import tiny_model_dir

    return tiny_model_dir("llama", layers=4, hidden=64, intermediate=172)


def dataset(name: str, n: int):
    from datasets import Dataset

    if name == "tiny":
        rows = [
            ("the cat sat on", " the mat", " a dog"),
            ("i think you", " agree", " not good"),
            ("is the answer good", " yes", " no the answer is bad"),
        ]
        rows = [rows[i % len(rows)] for i in range(n)]
        return Dataset.from_dict(
            {"prompt": [r[0] for r in rows], "chosen": [r[1] for r in rows], "rejected": [r[2] for r in rows]}
        )
    from research.assets import load_pairs

    train, _, _ = load_pairs(0, 40)
    return train.select(range(n))


def resolve(name: str) -> str:
    if name == "tiny":
        return tiny_model_dir()
    if name == "smollm2":
        from research.assets import DEFAULT_CACHE, resolve_model

        return resolve_model("auto", DEFAULT_CACHE)[0]
    return name


def build(arm: str, model_dir: str, data, args, num_layers: int):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_decpo import DecPOConfig, DecPOTrainer

    layers = {"dpo": None, "decpo_one_layer": None, "decpo_all_layers": list(range(num_layers))}[arm]
    # checkpointing off, under transformers 5's name for it when it has one (the old name warns)
    fields = {f.name for f in dataclasses.fields(DecPOConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    config = DecPOConfig(
        output_dir=tempfile.mkdtemp(prefix=f"decpo-bench-{arm}-"),
        decorrelation_coef=0.0 if arm == "dpo" else 1.0,
        decorrelation_layers=layers,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        bf16=False,
        use_cpu=args.device == "cpu",
        report_to="none",
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **{checkpointing: False},
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = (
        LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj", "up_proj"],
            task_type="CAUSAL_LM",
            init_lora_weights=False,
        )
        if args.lora
        else None
    )
    return DecPOTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=peft,
    )


def breakdown(trainers, step, arms, steps: int = 200):
    """Where the DecPO time goes inside a training step: each piece of the library timed with `perf_counter` (median
    over `steps` steps, after the paired measurement), and `compute_loss` (forward) vs the rest (backward) per arm."""
    import contextlib

    import trl_decpo.capture as capture
    import trl_decpo.trainers.dpo as trainer_module  # the module whose `build_row_index` the trainer calls

    pieces: dict[str, list[float]] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            result = fn(*a, **k)
            pieces.setdefault(name, []).append(time.perf_counter() - start)
            return result

        return wrapper

    originals = (trainer_module.build_row_index, capture.RowIndex.pool)
    trainer_module.build_row_index = timed("row_index", trainer_module.build_row_index)
    capture.RowIndex.pool = timed("pool (per layer)", capture.RowIndex.pool)
    try:
        for arm in arms:
            t = trainers[arm]
            forward = timed(f"{arm}: compute_loss (forward)", t.compute_loss)
            t.compute_loss = forward
            if t.decorrelation_enabled:
                t.decorrelation_penalty = timed(
                    f"{arm}: penalty (checks, stack, computation)", t.decorrelation_penalty
                )
                t._log_decorrelation = timed(f"{arm}: logging", t._log_decorrelation)
                cap = t.decorrelation_capture
                inner = cap.capture

                @contextlib.contextmanager
                def hooked(row_index, _inner=inner, _arm=arm):
                    start = time.perf_counter()
                    with _inner(row_index) as rows:
                        pieces.setdefault(f"{_arm}: register hooks", []).append(time.perf_counter() - start)
                        yield rows
                        start = time.perf_counter()
                    pieces.setdefault(f"{_arm}: remove hooks", []).append(time.perf_counter() - start)

                cap.capture = hooked
            totals = [step(t) for _ in range(steps)]
            pieces[f"{arm}: whole step"] = totals
            pieces[f"{arm}: backward and the rest"] = [
                a - b for a, b in zip(totals, pieces[f"{arm}: compute_loss (forward)"][-steps:], strict=True)
            ]
    finally:
        trainer_module.build_row_index, capture.RowIndex.pool = originals
    for name, values in pieces.items():
        print(
            json.dumps(
                {
                    "benchmark": "step_time_breakdown",
                    "piece": name,
                    "median_us": statistics.median(values) * 1e6,
                    "calls_per_step": len(values) / (steps * (1 if ":" in name else len(arms) - 1)),
                }
            )
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny', 'smollm2', or a model folder / Hub id")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm per round")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lora", dest="lora", action="store_false", help="full fine-tuning instead of LoRA")
    parser.add_argument(
        "--completion-tokens-only",
        action="store_true",
        help="on the CPU, TRL's fused LM head scores only the completion tokens, as it does on a GPU (as the main job "
        "trains: research.arms.completion_tokens_scored_on_cpu)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time each piece of the DecPO overhead inside a training step (200 more steps/arm)",
    )
    args = parser.parse_args()
    if args.completion_tokens_only:
        from research.arms import completion_tokens_scored_on_cpu

        with completion_tokens_scored_on_cpu():
            return run(args)
    return run(args)


def run(args):
    import torch
    from transformers import AutoConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve(args.model)
    num_layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    data = dataset(args.model if args.model == "tiny" else "smollm2", args.batch_size)
    arms = ["dpo", "decpo_one_layer", "decpo_all_layers"]
    trainers = {arm: build(arm, model_dir, data, args, num_layers) for arm in arms}
    batch = next(iter(trainers["dpo"].get_train_dataloader()))
    batch = {k: v.to(args.device) if hasattr(v, "to") else v for k, v in batch.items()}
    for trainer in trainers.values():
        trainer.model.to(args.device)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it

    def step(trainer):
        start = time.perf_counter()
        trainer.training_step(trainer.model, dict(batch))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for trainer in trainers.values():  # warm-up
        step(trainer)
    times = {arm: [] for arm in arms}
    for i in range(args.rounds * args.steps):  # one step per arm per turn, rotating the order: paired samples
        order = arms[i % len(arms) :] + arms[: i % len(arms)]
        for arm in order:
            times[arm].append(step(trainers[arm]))
    if args.breakdown:
        breakdown(trainers, step, arms)
    median = {arm: statistics.median(values) for arm, values in times.items()}
    paired = {arm: statistics.median(a / b for a, b in zip(times[arm], times["dpo"], strict=True)) for arm in arms}
    for arm in arms:
        print(
            json.dumps(
                {
                    "benchmark": "step_time",
                    "model": args.model,
                    "arm": arm,
                    "median_s": median[arm],
                    "steps": len(times[arm]),
                    "batch_pairs": args.batch_size,
                    "sequence_tokens": int(batch["input_ids"].shape[1]),
                    "threads": torch.get_num_threads(),
                    "device": args.device,
                    "completion_tokens_only": args.completion_tokens_only,
                }
            )
        )
    print(
        json.dumps(
            {
                "benchmark": "step_time_summary",
                "model": args.model,
                "ratio_one_layer": paired["decpo_one_layer"],
                "ratio_all_layers": paired["decpo_all_layers"],
                "ratio_of_medians_one_layer": median["decpo_one_layer"] / median["dpo"],
                "ratio_of_medians_all_layers": median["decpo_all_layers"] / median["dpo"],
                "num_layers": num_layers,
            }
        )
    )


if __name__ == "__main__":
    main()
