# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The QLoRA Llama-2 path on one GPU, ready to run where no weights can be downloaded: the example script
`examples/decpo_qlora_llama2.py` itself (its YAML settings: 4-bit NF4 base, LoRA on q_proj, v_proj, up_proj, DecPO at
layer 10, bf16, gradient checkpointing), on a model with Llama-2-7B's widths (hidden 4096, MLP 11008, 32 heads,
vocabulary 32000) and `--layers` decoder layers of random weights, built on the GPU and saved once, and on synthetic
preference pairs. Three runs of `--steps` optimizer steps each:

* `dpo`: `decorrelation_coef=0` (DecPOTrainer is then exactly DPOTrainer), non-reentrant checkpointing;
* `decpo`: the example's settings (non-reentrant checkpointing);
* `decpo_reentrant`: the same with `use_reentrant=True` (what TRL forces for PEFT under ZeRO-3): the penalty's gradient
  is injected at the recomputation.

Checks, each a line of the report that says PASS or FAIL: every run trains its LoRA weights and logs finite losses;
DecPO logs `loss = dpo_loss + penalty` and a penalty > 0; the reentrant run's first logged penalty and DPO loss equal the
non-reentrant run's (same data, same initial weights), and its LoRA weights after the steps are within a tolerance of
the non-reentrant run's (bf16 and 4-bit kernels: not bit-equal), and farther from DPO's. Step time and
peak memory per run go into the table (the example prints them), with their ratios to DPO; then the penalty's own
time at `--penalty-rows` x `--penalty-width` (4096 x 11008) and the FD measurement on `--probes` (1,000) probes against
a bare forward. Without a GPU (and without `--tiny`) it says so and exits 0. Writes `<out>/gpu_qlora.json` and
`<out>/gpu_qlora.md`.

    python -m benchmarks.gpu_qlora --out outputs/gpu_qlora                  # any CUDA machine with the test extras
    # the device machine of this workplace has torch, transformers, peft and accelerate, not the rest:
    sh benchmarks/gpu_wheels.sh                                              # here: the missing wheels into .whl/
    # there (carry .whl): python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    #   PYTHONPATH=/tmp/site:. python3 -m benchmarks.gpu_qlora --out $OUT
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time


WIDTHS = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
# `--tiny`: the same runs on a CPU in seconds (tests): small widths, float32, no quantization
TINY_WIDTHS = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2)
TINY_ARGS = ["--load_in_4bit", "false", "--bf16", "false", "--use_cpu", "true", "--dtype", "float32"]
RUNS = {
    "dpo": ["--decorrelation_coef", "0"],
    "decpo": [],
    "decpo_reentrant": ["--activation_checkpointing_kwargs", '{"use_reentrant": true}'],
}


def build_model(folder: str, layers: int, tiny: bool = False) -> None:
    """A Llama-2-7B-shaped model (``tiny``: small widths, on the CPU) with ``layers`` decoder layers and random
    weights, and a word-level tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from trl_decpo.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=32000, num_hidden_layers=layers, max_position_embeddings=4096, rms_norm_eps=1e-5,
        **(TINY_WIDTHS if tiny else WIDTHS),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cpu" if tiny else "cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if tiny else torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_pairs(path: str, count: int) -> None:
    """Synthetic preference pairs in the tiny tokenizer's words (the model is random: only the mechanics matter)."""
    from trl_decpo.testing import PAIRS

    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            prompt, chosen, rejected = PAIRS[i % len(PAIRS)]
            handle.write(json.dumps({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected}) + "\n")


EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "decpo_qlora_llama2.py"
)


def run(name: str, extra: list[str], model_dir: str, data: str, out: str, steps: int, batch: int) -> dict:
    """The example script as a user runs it (a process of its own), saving at its last step: the log history and
    the LoRA weights are read from that checkpoint, the step time and peak memory from the line it prints."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    folder = os.path.join(out, name)
    argv = [
        "--model_name_or_path", model_dir, "--dataset_name", data, "--test_split_size", "0.1", "--output_dir", folder,
        "--max_steps", str(steps), "--push_to_hub", "false", "--per_device_train_batch_size", str(batch),
        "--gradient_accumulation_steps", "1", "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps",
        str(steps), "--logging_steps", "1", "--learning_rate", "1e-3", "--monosemanticity_max_samples", "16",
        "--seed", "0", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run([sys.executable, EXAMPLE, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: the example failed\n{done.stderr[-4000:]}")
    text = done.stdout + done.stderr
    step_time, peak = re.search(r"\(([\d.]+) s/step", text), re.search(r"peak GPU memory ([\d.]+) GiB", text)
    with open(os.path.join(folder, f"checkpoint-{steps}", "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    lora = load_file(os.path.join(folder, f"checkpoint-{steps}", "adapter_model.safetensors"))
    return {
        "name": name,
        "logs": [h for h in history if "loss" in h and "train_runtime" not in h],
        "seconds_per_step": float(step_time.group(1)) if step_time else None,
        "peak_gib": float(peak.group(1)) if peak else None,  # on a GPU only
        "wall_seconds": time.perf_counter() - start,
        "lora": {k: v.float() for k, v in lora.items()},
    }


def penalty_seconds(rows: int, width: int, device: str) -> dict:
    """Seconds of one forward and backward of the penalty on ``rows x width`` activations, per dtype and target."""
    import torch

    from trl_decpo import decorrelation_penalty

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        base = torch.randn(rows, width, device=device).to(dtype)
        for target in ("samples", "features"):

            def once(base=base, target=target):
                z = base.clone().requires_grad_(True)
                decorrelation_penalty(z, target=target).backward()
                if device == "cuda":
                    torch.cuda.synchronize()

            once()  # warm-up
            start = time.perf_counter()
            once()
            out[f"{str(dtype).split('.')[-1]}, {target}"] = time.perf_counter() - start
    return out


def measurement_ratio(model_dir: str, count: int, device: str) -> dict:
    """Seconds of `measure_monosemanticity` (every layer) and of a bare forward over the same ``count`` probes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.monosemanticity_cost import bare_forward, timed
    from trl_decpo import measure_monosemanticity
    from trl_decpo.monosemanticity.probes import tokenize_prompts
    from trl_decpo.testing import PAIRS

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [f"{PAIRS[i % len(PAIRS)][0]} {PAIRS[(i // len(PAIRS)) % len(PAIRS)][1]}" for i in range(count)]
    tokens = tokenize_prompts(prompts, tokenizer)
    bare_forward(model, tokens, 16, tokenizer.pad_token_id, {"logits_to_keep": 1})  # warm-up
    bare = timed(lambda: bare_forward(model, tokens, 16, tokenizer.pad_token_id, {"logits_to_keep": 1}))
    measure = timed(lambda: measure_monosemanticity(model, prompts, tokenizer, batch_size=16))
    return {"bare": bare, "measure": measure}


def checks(results: dict) -> list[tuple[str, bool]]:
    out = []
    for name, r in results.items():
        finite = all(math.isfinite(h["loss"]) for h in r["logs"])
        out.append((f"{name}: {len(r['logs'])} finite losses logged", finite and len(r["logs"]) > 0))
    for name in ("decpo", "decpo_reentrant"):
        first = results[name]["logs"][0]
        total = first["decorrelation/dpo_loss"] + first["decorrelation/penalty"]
        out.append((f"{name}: loss = dpo_loss + penalty ({first['loss']:.4f} vs {total:.4f}), penalty > 0",
                    abs(first["loss"] - total) < 1e-3 * max(1.0, abs(total)) and first["decorrelation/penalty"] > 0))  # fmt: skip
    a, b = results["decpo"]["logs"][0], results["decpo_reentrant"]["logs"][0]
    for key in ("decorrelation/penalty", "decorrelation/dpo_loss"):
        out.append((f"reentrant = non-reentrant at step 1: {key} {b[key]:.5f} vs {a[key]:.5f}",
                    abs(a[key] - b[key]) <= 2e-2 * max(abs(a[key]), 1e-3)))  # fmt: skip
    lora_a, lora_b, lora_dpo = (results[k]["lora"] for k in ("decpo", "decpo_reentrant", "dpo"))
    gap = max((lora_a[n] - lora_b[n]).abs().max().item() for n in lora_a)
    from_dpo = max((lora_a[n] - lora_dpo[n]).abs().max().item() for n in lora_a)
    out.append((f"reentrant LoRA weights near the non-reentrant run's (max gap {gap:.2e}) and farther from DPO's "
                f"({from_dpo:.2e}): the penalty's gradient reached them", gap < 0.5 * from_dpo))  # fmt: skip
    moved = max(v.abs().max().item() for n, v in lora_a.items() if "lora_B" in n)
    out.append((f"decpo: LoRA B weights moved from 0 (max {moved:.2e})", math.isfinite(moved) and moved > 0))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/gpu_qlora")
    parser.add_argument("--layers", type=int, default=12, help="decoder layers (>= 11: the example hooks layer 10)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=80)
    parser.add_argument("--tiny", action="store_true", help="small widths on the CPU, no quantization (tests)")
    parser.add_argument("--penalty-rows", type=int, default=4096)
    parser.add_argument("--penalty-width", type=int, default=11008)
    parser.add_argument("--probes", type=int, default=1000, help="probe prompts of the measurement's timing")
    args = parser.parse_args(argv)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("benchmarks.gpu_qlora: no CUDA GPU here, nothing to check (`--tiny` runs the same on a CPU)", flush=True)
        return 0
    os.makedirs(args.out, exist_ok=True)
    model_dir, data = os.path.join(args.out, "model"), os.path.join(args.out, "pairs.jsonl")
    start = time.perf_counter()
    build_model(model_dir, args.layers, args.tiny)
    write_pairs(data, args.pairs)
    print(f"model and data in {time.perf_counter() - start:.0f} s", flush=True)
    tiny = TINY_ARGS if args.tiny else []
    results = {
        name: run(name, [*extra, *tiny], model_dir, data, args.out, args.steps, args.batch)
        for name, extra in RUNS.items()
    }
    verdicts = checks(results)
    device = "cpu" if args.tiny else "cuda"
    costs = {
        "penalty": penalty_seconds(args.penalty_rows, args.penalty_width, device),
        "measurement": measurement_ratio(model_dir, args.probes, device),
    }
    lines = [
        f"# QLoRA path on {'the CPU (--tiny)' if args.tiny else torch.cuda.get_device_name()} (torch {torch.__version__})",
        "",
        f"Llama-2-7B widths, {args.layers} layers, 4-bit NF4 base, LoRA r=8 on q/v/up, bf16, checkpointing; "
        f"{args.steps} steps of {args.batch} pairs. Command: `python -m benchmarks.gpu_qlora --layers {args.layers} "
        f"--steps {args.steps} --batch {args.batch}`.",
        "",
        "| run | s/step | peak GiB | first loss | first penalty |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        first = r["logs"][0]
        step, peak = (f"{v:.2f}" if v is not None else "n/a" for v in (r["seconds_per_step"], r["peak_gib"]))
        lines.append(f"| {name} | {step} | {peak} | {first['loss']:.4f} | "
                     f"{first.get('decorrelation/penalty', float('nan')):.4f} |")  # fmt: skip
    dpo = results["dpo"]
    for name in ("decpo", "decpo_reentrant"):
        r = results[name]
        step = (
            r["seconds_per_step"] / dpo["seconds_per_step"]
            if r["seconds_per_step"] and dpo["seconds_per_step"]
            else None
        )
        peak = r["peak_gib"] / dpo["peak_gib"] if r["peak_gib"] and dpo["peak_gib"] else None
        lines.append(f"| {name} / dpo | {step or float('nan'):.3f} | {peak or float('nan'):.3f} | | |")
    lines += [
        "",
        f"The penalty alone, forward and backward, {args.penalty_rows} rows of width {args.penalty_width}:",
        "",
    ]
    lines += [f"- {key}: {value * 1000:.1f} ms" for key, value in costs["penalty"].items()]
    m = costs["measurement"]
    lines += [
        "",
        f"FD measurement of every layer on {args.probes} probes: {m['measure']:.2f} s against a bare forward's "
        f"{m['bare']:.2f} s (ratio {m['measure'] / m['bare']:.2f}).",
    ]
    lines += ["", *[f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in verdicts]]
    report = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "gpu_qlora.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    with open(os.path.join(args.out, "gpu_qlora.json"), "w", encoding="utf-8") as handle:
        json.dump({"runs": {k: {**v, "lora": None} for k, v in results.items()}, "costs": costs}, handle, indent=1)
    print(report, flush=True)
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
