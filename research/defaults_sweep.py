# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Evidence for `DecPOConfig`'s defaults: DecPO at several coefficients and layers against plain DPO, on the main
job's task (research/task.py, where DPO learns), two seeds, with paired bootstrap intervals.

Every arm is trained and measured exactly as in the main job (`research.arms`: same LoRA, steps, learning rate, seeds
and data order; held-out rewards against the base, FD and its control on the held-out prompts, offensiveness of greedy
replies). Each DecPO setting is compared with the DPO run of the same seed (`research.evidence.compare`).

    python -m research.defaults_sweep --reuse outputs/demo --output-dir outputs/defaults --threads 2

`--reuse` takes the DPO and default-DecPO arms of a `make demo` run (same settings, checked) instead of training them
again: 4 more runs, each about as long as an arm of the main job (about 2 minutes on 2 AVX2-only cores in
float32, docs/main_job.md); without it, 8 runs.

Writes `<output-dir>/sweep.md` (the table of docs/defaults.md) and `sweep.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from research.arms import ArmResult, evaluate_model, say, train_arm, with_reference_logps
from research.assets import DEFAULT_CACHE, resolve_model
from research.demo import add_run_arguments, parse_run_arguments
from research.evidence import compare
from research.task import load_task
from trl_decpo import DecPOConfig


KEYS = ("reward_accuracy", "reward_margin", "offensiveness", "fd_hooked", "control_hooked", "fd_mean", "control_mean")


def settings(args) -> list[tuple[float | None, list[int] | None]]:
    coefs = [float(c) for c in args.coefs.split(",") if c]
    layers = [int(x) for x in args.layers.split(",") if x]
    return [(c, None) for c in coefs] + [(None, [x]) for x in layers]


def main(argv=None):
    parser = add_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "outputs/defaults")
    parser.add_argument("--coefs", default="1,10", help="DecPO coefficients at the default layer")
    parser.add_argument("--layers", default="5,20", help="other hooked layers, at the default coefficient")
    parser.add_argument("--layer-seeds", default="0", help="seeds of the layer runs (compared with DPO's)")
    parser.add_argument("--reuse", default=None, help="a main-job output folder: its DPO and default DecPO arms")
    parser.set_defaults(save_adapters=False)
    args = parse_run_arguments(parser, argv, "research.defaults_sweep")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    if args.model_dir:
        model_dir, source = args.model_dir, args.model_dir
    else:
        model_dir, source = resolve_model("auto", DEFAULT_CACHE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = load_task(tokenizer, min_gap=args.min_gap, reply_tokens=args.reply_tokens)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    _, ref_logps = evaluate_model(base, tokenizer, task, args, None, ArmResult("base", None))
    task.train = with_reference_logps(base, tokenizer, task.train, args)  # every arm's reference, computed once
    del base

    def run(kind, coef=None, layers=None, run_seeds=seeds):
        results, hooked = [], None
        for seed in run_seeds:
            trainer, result = train_arm(kind, seed, model_dir, task, ref_logps, args, coef=coef, layers=layers)
            if kind == "decpo":
                hooked = trainer.decorrelation_sites[0].layer
            evaluate_model(trainer.model, tokenizer, task, args, ref_logps, result)
            results.append(result)
            del trainer
        return results, hooked

    reused = load_reused(args) if args.reuse else None
    dpo = reused["arms"]["dpo"] if reused else run("dpo")[0]
    layer_seeds = [int(s) for s in args.layer_seeds.split(",")]
    rows = []
    for coef, layers in settings(args):
        say(f"DecPO coefficient {coef if coef is not None else 'default'}, layers {layers or 'default'}")
        if reused and coef == DecPOConfig.decorrelation_coef and layers is None:
            decpo, hooked = reused["arms"]["decpo"], reused["hooked"]
        else:
            decpo, hooked = run("decpo", coef, layers, seeds if layers is None else layer_seeds)
        paired = [r for r in dpo if r.seed in {d.seed for d in decpo}]
        comparison = {r["key"]: r for r in compare(paired, decpo, hooked, num_resamples=args.num_resamples)}
        rows.append(
            {
                "coef": coef,
                "layers": layers,
                "hooked": hooked,
                "comparison": comparison,
                "accuracy": [r.rewards.accuracy for r in decpo],
            }
        )
    dpo_accuracy = [r.rewards.accuracy for r in dpo]
    write(args, source, task, rows, dpo_accuracy, time.perf_counter() - start)


SAME = ("steps", "lr", "beta", "min_gap", "reply_tokens", "seeds", "bf16", "model_dir")


def load_reused(args) -> dict:
    """The main job's arms (`arms.pt`), after checking they were trained with the same settings."""
    import torch

    saved = torch.load(os.path.join(args.reuse, "arms.pt"), weights_only=False)
    different = {k: (saved["args"].get(k), getattr(args, k)) for k in SAME if saved["args"].get(k) != getattr(args, k)}
    if different:
        raise SystemExit(f"--reuse {args.reuse}: trained with other settings (saved, asked): {different}")
    return saved


def write(args, source, task, rows, dpo_accuracy, seconds):
    head = "| setting | hooked layer | DecPO reward acc (per seed) | " + " | ".join(
        f"{key}: DecPO - DPO [95% CI]" for key in KEYS
    )
    lines = [
        "# DecPO settings against DPO on the main job's task",
        "",
        f"`{args.command}` ({seconds / 60:.0f} min). "
        f"Model: {source}. {task.meta['train_pairs']} training / {task.meta['heldout_pairs']} held-out pairs; "
        f"{args.steps} steps of 4 pairs, lr {args.lr}, beta {args.beta}, seeds {args.seeds}; intervals pooled over "
        f"seeds, {args.num_resamples} paired bootstrap resamples of the held-out units. DPO reward accuracy per seed: "
        f"{', '.join(f'{a:.3f}' for a in dpo_accuracy)}.",
        "",
        head + " |",
        "|" + "---|" * (3 + len(KEYS)),
    ]
    for row in rows:
        name = f"coef {row['coef']:g}" if row["coef"] is not None else f"layer {row['layers'][0]} (default coef)"
        cells = []
        for key in KEYS:
            c = row["comparison"][key]
            mark = "" if c["verdict"] == "no detectable difference" else " *"
            cells.append(f"{c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]{mark}")
        accuracy = ", ".join(f"{a:.3f}" for a in row["accuracy"])
        lines.append(f"| {name} | {row['hooked']} | {accuracy} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: the interval excludes 0.", ""]
    text = "\n".join(lines)
    with open(os.path.join(args.output_dir, "sweep.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    with open(os.path.join(args.output_dir, "sweep.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {"args": vars(args), "model": source, "task": task.meta, "dpo_accuracy": dpo_accuracy, "rows": rows},
            handle,
            indent=1,
        )
    print(text, flush=True)


if __name__ == "__main__":
    main()
