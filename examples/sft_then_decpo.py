# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Decorrelated SFT, then DecPO, with LoRA; the monosemanticity proxies measured before and after each stage.

The usual recipe: SFT on the preferred completions, then DPO from the SFT model; here both stages carry the
decorrelation penalty on the same layer(s) (`DecorrelatedSFTTrainer`, then `DecPOTrainer`). FD, its control, the
participation ratio (PR) and sparsity are measured at those layers on held-out prompts (never trained on) for the base,
SFT and DecPO models; each stage difference gets a 95% paired bootstrap interval over the probes. Writes
`results.json`, the merged SFT model (`sft/`) and the DecPO adapter on it (`decpo/`) to `--output-dir`.

    python examples/sft_then_decpo.py      # a tiny random Llama and toy pairs: seconds, offline
    python examples/sft_then_decpo.py --model HuggingFaceTB/SmolLM2-135M-Instruct --dataset my_pairs.jsonl --chat \\
        --sft-steps 30 --decpo-steps 40 --output-dir outputs/my_run
    make sft-then-decpo                    # SmolLM2 offline on on-policy ToxiGen pairs (docs/sft_then_decpo.md)

The SFT adapter is merged before DecPO, as TRL's two-stage recipes do. DPO with a LoRA model and `ref_model=None`
takes the model with its adapter off as the reference. So a fresh adapter on the merged SFT weights makes the SFT
model the reference, as DPO assumes. Training the SFT adapter further would make the base model the reference.
"""

import argparse
import hashlib
import json
import os
import random
import time

import torch
from datasets import load_dataset
from peft import AutoPeftModelForCausalLM, LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl.data_utils import maybe_extract_prompt

from trl_decpo import (
    DecorrelatedSFTConfig,
    DecorrelatedSFTTrainer,
    DecPOConfig,
    DecPOTrainer,
    choose_precision,
    compare_monosemanticity,
    evaluate_models,
    proxy_differences,
)
from trl_decpo.testing import tiny_model_dir, tiny_preference_dataset


def load_pairs(args):
    """(train pairs, held-out pairs, held-out prompts): the prompts are split, so no probe is trained on."""
    if args.dataset is None:
        data = tiny_preference_dataset(16)
    else:
        local = os.path.isfile(args.dataset)
        data = load_dataset("json" if local else args.dataset, data_files=args.dataset if local else None)["train"]
    if args.ranked:  # each row's best-scored sample is chosen, its worst rejected
        samples, scores = args.ranked
        sign = -1 if args.lower_is_better else 1

        def best_and_worst(row):
            order = sorted(range(len(row[scores])), key=lambda i: sign * row[scores][i])
            gap = abs(row[scores][order[-1]] - row[scores][order[0]])
            return {"chosen": row[samples][order[-1]], "rejected": row[samples][order[0]], "gap": gap}

        data = data.filter(lambda row: bool(row[samples])).map(best_and_worst)
        data = data.filter(lambda row: row["gap"] >= args.min_gap and row["chosen"] != row["rejected"])
    data = data.filter(lambda row: row["chosen"] is not None)  # e.g. a metadata line
    data = data.map(maybe_extract_prompt).select_columns(["prompt", "chosen", "rejected"])
    if args.chat:  # text rows as one chat turn, as a chat model is prompted
        system = [{"role": "system", "content": args.system}] if args.system else []
        data = data.map(
            lambda row: {
                "prompt": system + [{"role": "user", "content": row["prompt"]}],
                **{k: [{"role": "assistant", "content": row[k]}] for k in ("chosen", "rejected")},
            }
        )
    prompts = sorted({json.dumps(p) for p in data["prompt"]})
    random.Random(args.seed).shuffle(prompts)
    held = set(prompts[: max(2, round(args.heldout * len(prompts)))])
    rows = {split: [i for i, p in enumerate(data["prompt"]) if (json.dumps(p) in held) == split] for split in (0, 1)}
    return data.select(rows[0]), data.select(rows[1]), [json.loads(p) for p in sorted(held)]


def fingerprint(model) -> str:
    """A hash of the weights (to check that DecPO starts from the SFT result)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: a tiny random Llama)")
    parser.add_argument("--dataset", default=None, help="Hub id, or a .json/.jsonl file, of prompt/chosen/rejected")
    parser.add_argument("--ranked", nargs=2, metavar=("SAMPLES", "SCORES"), help="pairs from scored samples instead")
    parser.add_argument("--lower-is-better", action="store_true", help="with --ranked: the lowest score is chosen")
    parser.add_argument("--min-gap", type=float, default=0.0, help="with --ranked: minimum best-worst score gap")
    parser.add_argument("--chat", action="store_true", help="text rows as chat messages (the tokenizer's template)")
    parser.add_argument("--system", default=None, help="with --chat: a system message before each prompt")
    parser.add_argument("--heldout", type=float, default=0.25, help="fraction of the prompts held out as probes")
    parser.add_argument("--sft-steps", type=int, default=3)
    parser.add_argument("--decpo-steps", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--coef", type=float, default=1.0, help="decorrelation_coef of both stages")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="penalised and measured (num_layers // 3)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="auto: bf16 autocast where the GPU or CPU runs bf16 natively, else float32; bf16 or fp32 forces one",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--output-dir", default="outputs/sft_then_decpo")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    start = time.perf_counter()
    model_path = args.model or tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train, heldout, probes = load_pairs(args)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    layers = args.layers or [model.config.num_hidden_layers // 3]
    sft_dir, decpo_dir = os.path.join(args.output_dir, "sft"), os.path.join(args.output_dir, "decpo")
    budget = dict(per_device_train_batch_size=4, learning_rate=args.lr, lr_scheduler_type="constant", max_length=256)
    precision = choose_precision(args.precision, use_cpu=not torch.cuda.is_available())
    print(precision.describe(), flush=True)
    device = dict(bf16=precision.bf16, use_cpu=not torch.cuda.is_available(), activation_checkpointing=False)
    run = dict(seed=args.seed, logging_steps=1, report_to="none", save_strategy="no")
    penalty = dict(decorrelation_coef=args.coef, decorrelation_layers=layers)  # the same penalty in both stages
    common = {**budget, **device, **run, **penalty}
    lora = dict(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    results = {"settings": vars(args), "model": model_path, "layers": layers, "probes": probes, "stages": {}}
    base_weights = fingerprint(model)  # SFT changes `model` in place

    # Stage 1: SFT on prompt + chosen completion (the loss is on the completion), with the penalty
    set_seed(args.seed)
    sft_data = train.map(lambda row: {"completion": row["chosen"]}, remove_columns=["chosen", "rejected"])
    sft_args = DecorrelatedSFTConfig(sft_dir, max_steps=args.sft_steps, **common)
    sft = DecorrelatedSFTTrainer(
        model=model, args=sft_args, train_dataset=sft_data, processing_class=tokenizer, peft_config=LoraConfig(**lora)
    )
    sft.train()
    sft.model.merge_and_unload().save_pretrained(sft_dir)  # the SFT adapter merged: DecPO's start and its reference
    tokenizer.save_pretrained(sft_dir)
    # Stage 2: DecPO on the pairs, a fresh LoRA adapter on the saved SFT model (as a second script would load it)
    set_seed(args.seed)
    decpo_args = DecPOConfig(decpo_dir, max_steps=args.decpo_steps, **common)
    decpo = DecPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32),
        args=decpo_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=LoraConfig(**lora),
    )
    decpo.train()
    decpo.save_model(decpo_dir)

    # The three models as saved, in float32: after a bf16 run, the trainer's model forward stays under bf16 autocast
    # (accelerate's mixed-precision wrapper), which would measure them at another precision
    models = {
        "base": AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
        "sft": AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32),
        "decpo": AutoPeftModelForCausalLM.from_pretrained(decpo_dir, dtype=torch.float32),  # on the base it records
    }
    comparison = compare_monosemanticity(
        models["base"], {k: models[k] for k in ("sft", "decpo")}, probes, tokenizer, layers=layers
    )
    for stage, trainer in (("base", None), ("sft", sft), ("decpo", decpo)):
        logs = {"logs": [log for log in trainer.state.log_history if "loss" in log]} if trainer else {}
        weights = base_weights if stage == "base" else fingerprint(models[stage])
        results["stages"][stage] = {**comparison.reports[stage].to_dict(), "weights": weights, **logs}
    # DecPO's rewards on the held-out pairs, against its DPO reference: the SFT model
    evaluation = evaluate_models(
        models["sft"],
        {"decpo": models["decpo"]},
        heldout,
        tokenizer=tokenizer,
        base_name="sft",
        beta=decpo_args.beta,
        max_length=256,
        seed=args.seed,
    )
    # the weights under the adapter
    results["stages"]["decpo"]["start_weights"] = fingerprint(models["decpo"].unload())

    # Each stage against the one before it (and DecPO against the base), on the same probes
    pairs = [("base", "sft"), ("sft", "decpo"), ("base", "decpo")]
    differences = results["differences"] = [
        {"stages": f"{d['model']} - {d['against']}", **d} for d in proxy_differences(comparison, pairs, seed=args.seed)
    ]
    rewards = {c["metric"]: c for c in evaluation.table.comparisons}  # DecPO against chance, and against 0
    accuracy, margin = rewards["reward_accuracy"], rewards["reward_margin"]
    results["heldout_rewards"] = {"pairs": len(heldout), "accuracy": accuracy, "margin": margin}
    results["seconds"] = time.perf_counter() - start
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    print(f"\n{len(train)} training pairs, {len(probes)} held-out prompts, seed {args.seed}")
    print("stage  layer      FD  control     PR  sparsity  loss: first -> last  penalty: first -> last")
    for stage, s in results["stages"].items():
        first, last = (s["logs"][0], s["logs"][-1]) if "logs" in s else ({}, {})
        fit = "".join(f"{first[k]:>9.4f} -> {last[k]:.4f}" for k in ("loss", "decorrelation/penalty") if k in first)
        for r in s["layers"]:
            proxies = f"{r['fd']:.4f}   {r['control']:.4f}  {r['participation_ratio']:5.2f}    {r['sparsity']:.4f}"
            print(f"{stage:<6} {r['layer']:>5}  {proxies}  {fit}")
    interval = "{difference:+.4f} [{low:+.4f}, {high:+.4f}] {verdict}".format
    for d in differences:
        print(f"{d['stages']:<12} layer {d['layer']:<3} {d['metric']:<8} {interval(**d)}")
    print(f"DecPO's rewards on the {len(heldout)} held-out pairs (reference: the SFT model):")
    print(f"  accuracy {accuracy['b']:.3f}, minus chance {interval(**accuracy)}")
    print(f"  margin {interval(**margin)}")
    stages = results["stages"]
    print(f"DecPO's adapter sits on the SFT weights: {stages['decpo']['start_weights'] == stages['sft']['weights']}")
    print(f"wrote {os.path.join(args.output_dir, 'results.json')} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
