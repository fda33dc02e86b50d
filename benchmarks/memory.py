# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Peak memory of DecPO against DPO (docs/benchmarks.md): peak RSS on CPU, `torch.cuda.max_memory_allocated` on GPU.

Peak RSS only grows within a process, so each arm runs in its own subprocess (the arms alternate over `--repeats`
rounds; the median per arm is reported): build the trainer as `benchmarks.step_time` does, run `--steps`
training steps on the same batch, report the peak. From the repository root:

    python -m benchmarks.memory --model tiny
    python -m benchmarks.memory --model smollm2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: `benchmarks` and `research`


def child(args) -> None:
    import torch
    from transformers import AutoConfig

    from benchmarks.step_time import build, dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    num_layers = AutoConfig.from_pretrained(args.model_dir).num_hidden_layers
    data = dataset("tiny" if args.model == "tiny" else "smollm2", args.batch_size)
    trainer = build(args.arm, args.model_dir, data, args, num_layers)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.to(args.device)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it
    batch = {k: v.to(args.device) if hasattr(v, "to") else v for k, v in batch.items()}
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.steps):
        trainer.training_step(trainer.model, dict(batch))
    peak = (
        torch.cuda.max_memory_allocated()
        if args.device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    print(json.dumps({"arm": args.arm, "peak_bytes": peak}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lora", dest="lora", action="store_false")
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        return child(args)
    from benchmarks.step_time import resolve

    model_dir = resolve(args.model)
    arms = ["dpo", "decpo_one_layer", "decpo_all_layers"]
    peaks = {arm: [] for arm in arms}
    passthrough = [
        "--model",
        args.model,
        "--model-dir",
        model_dir,
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ] + ([] if args.lora else ["--no-lora"])
    for round_ in range(args.repeats):
        for arm in arms if round_ % 2 == 0 else reversed(arms):
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", *passthrough, "--arm", arm],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            peaks[arm].append(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])
    median = {arm: statistics.median(values) for arm, values in peaks.items()}
    for arm in arms:
        print(
            json.dumps(
                {
                    "benchmark": "memory",
                    "model": args.model,
                    "arm": arm,
                    "peak_mib": median[arm] / 2**20,
                    "kind": "cuda_max_allocated" if args.device.startswith("cuda") else "rss",
                    "runs": len(peaks[arm]),
                }
            )
        )
    print(
        json.dumps(
            {
                "benchmark": "memory_summary",
                "model": args.model,
                "ratio_one_layer": median["decpo_one_layer"] / median["dpo"],
                "ratio_all_layers": median["decpo_all_layers"] / median["dpo"],
            }
        )
    )


if __name__ == "__main__":
    main()
