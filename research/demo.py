# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The README's main job: base vs DPO vs DecPO on SmolLM2-135M-Instruct, offline, on CPU, two seeds, in < 15 min.

* task (research/task.py): make the model's replies to ToxiGen statements less offensive; on-policy pairs of the
  model's own sampled replies ranked by an offline scorer (alt-profanity-check), split into training and held-out
  pairs, stratified;
* training: plain `trl.DPOTrainer` and `trl_decpo.DecPOTrainer` (library defaults), LoRA, the same seed, data order
  and step budget per seed, for each of `--seeds`;
* measurement (research/arms.py), the same for every arm: held-out reward accuracy and margin against the base model,
  FD, its anisotropy-free control and sparsity per layer on the held-out prompts, and the offensiveness of greedy
  replies to them; the held-out margin during training;
* comparison (research/evidence.py): DecPO - DPO with 95% paired bootstrap intervals over held-out units, pooled
  over seeds and per seed; "no detectable difference" where the interval covers 0; measures that moved against the
  paper's expected direction are flagged.

Writes `<output-dir>/report.md`, `results.json`, `fd_differences_by_depth.png`, `fd_by_depth.png`,
`heldout_margin_by_step.png`, and the adapters of
every arm (`dpo_seed0/`, `decpo_seed0/`, ...).

    make demo          # or: python -m research.demo --output-dir outputs/demo --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from research.arms import ArmResult, evaluate_model, machine, phase, say, train_arm, with_reference_logps
from research.assets import DEFAULT_CACHE, resolve_model
from research.evidence import compare, interval
from research.task import load_task
from trl_decpo import choose_precision
from trl_decpo.precision import PRECISION_CHOICES


def add_run_arguments(parser: argparse.ArgumentParser, output_dir: str) -> argparse.ArgumentParser:
    parser.add_argument("--output-dir", default=output_dir)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (>= 2 for a seed spread)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per arm (4 pairs each)")
    parser.add_argument("--curve-steps", type=int, default=15, help="held-out margin every this many steps")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lora-targets", default="all-linear", help='"all-linear" or comma-separated module names')
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--min-gap", type=float, default=0.15, help="minimum scorer gap of a kept pair")
    parser.add_argument("--reply-tokens", type=int, default=None, help="cut replies to this many tokens (rescored)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="greedy reply length for the task score")
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--num-resamples", type=int, default=2000)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="training precision: auto (default) = bf16 autocast where this CPU runs bf16 natively, else float32; "
        "bf16 or fp32 forces one (every arm is measured in float32 either way)",
    )
    parser.add_argument("--no-save-adapters", dest="save_adapters", action="store_false")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--model-dir", default=None, help="a local model folder instead of SmolLM2 (tests)")
    return parser


def parse_run_arguments(parser: argparse.ArgumentParser, argv, script: str) -> argparse.Namespace:
    """Parse, record the command, and resolve ``--precision`` into ``args.bf16`` with its one-line reason (printed)."""
    args = parser.parse_args(argv)
    args.command = " ".join([f"python -m {script}", *(sys.argv[1:] if argv is None else argv)])
    precision = choose_precision(args.precision, use_cpu=True)
    args.bf16, args.precision_reason = precision.bf16, precision.reason
    say(precision.describe())
    return args


def main(argv=None):
    parser = add_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "outputs/demo")
    args = parse_run_arguments(parser, argv, "research.demo")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    if args.model_dir:
        model_dir, source = args.model_dir, args.model_dir
    else:
        model_dir, source = resolve_model("auto", DEFAULT_CACHE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = load_task(tokenizer, min_gap=args.min_gap, reply_tokens=args.reply_tokens)
    m = task.meta
    say(f"model: SmolLM2-135M-Instruct ({source})")
    say(f"task: {m['train_pairs']} training and {m['heldout_pairs']} held-out on-policy pairs from {m['pairs_file']}")

    say("measuring the base model (the reference of every reward)")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base_result, ref_logps = evaluate_model(base, tokenizer, task, args, None, ArmResult("base", None))
    with phase(f"  base: reference log-probs of the {len(task.train)} training pairs, shared by every arm"):
        task.train = with_reference_logps(base, tokenizer, task.train, args)
    del base
    hooked = None
    arms: dict[str, list[ArmResult]] = {"dpo": [], "decpo": []}
    for seed in seeds:
        for kind in ("dpo", "decpo"):
            say(f"training {kind.upper()} seed {seed}: {args.steps} steps of 4 pairs (LoRA)")
            trainer, result = train_arm(kind, seed, model_dir, task, ref_logps, args)
            if kind == "decpo":
                hooked = trainer.decorrelation_sites[0].layer
            evaluate_model(trainer.model, tokenizer, task, args, ref_logps, result)
            say(
                f"{kind.upper()} seed {seed}: {result.train_seconds:.0f} s of training; held-out accuracy "
                f"{result.rewards.accuracy:.3f}, margin {result.rewards.margin:+.4f}"
            )
            arms[kind].append(result)
            del trainer
    hooked = hooked if hooked is not None else base_result.report.layers[len(base_result.report.layers) // 3]
    rows = compare(arms["dpo"], arms["decpo"], hooked, num_resamples=args.num_resamples)
    # every arm's per-unit data (rewards, scores, probe rows), for `research.defaults_sweep --reuse`
    torch.save(
        {"args": vars(args), "hooked": hooked, "base": base_result, "arms": arms},
        os.path.join(args.output_dir, "arms.pt"),
    )
    seconds = time.perf_counter() - start
    write_outputs(args, source, task, tokenizer, base_result, arms, rows, hooked, seconds)
    say(f"done in {seconds / 60:.1f} min; report: {os.path.abspath(os.path.join(args.output_dir, 'report.md'))}")
    print_next_steps(args, model_dir, seeds, hooked)


def cli_command() -> str:
    """How to call ``trl-decpo`` of this Python environment: its bare name when the shell finds that one on ``PATH``
    (an activated environment), else its path (e.g. ``.venv/bin/trl-decpo`` after ``make demo``)."""
    import shutil

    here = os.path.join(os.path.dirname(sys.executable), "trl-decpo")
    found = shutil.which("trl-decpo")
    if not os.path.isfile(here) or (found and os.path.realpath(found) == os.path.realpath(here)):
        return "trl-decpo"
    relative = os.path.relpath(here)
    return relative if not relative.startswith("..") else here


def print_next_steps(args, model_dir: str, seeds, hooked: int) -> None:
    out, s, cli = args.output_dir, seeds[0], cli_command()
    prompts = f"--prompts {out}/heldout_prompts.jsonl"
    print(
        "\nNext, on the adapters this run saved (`evaluate` with the job's settings gives its rewards and "
        f"offensiveness for seed {s}):\n"
        f"  {cli} compare {model_dir} {out}/dpo_seed{s} {out}/decpo_seed{s} {prompts}\n"
        f"  {cli} measure {out}/decpo_seed{s} {prompts}\n"
        f"  {cli} top-tokens {out}/decpo_seed{s} --layer {hooked} {prompts}\n"
        f"  {cli} evaluate {model_dir} {out}/dpo_seed{s} {out}/decpo_seed{s} --dataset {out}/heldout_pairs.jsonl "
        f"{prompts} --scorer profanity_check:predict_prob --names base,dpo,decpo --beta {args.beta} "
        f"--max_new_tokens {args.max_new_tokens}\n",
        flush=True,
    )


def _fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def write_outputs(args, source, task, tokenizer, base, arms, rows, hooked, seconds):
    import torch

    from research.evidence import value
    from research.figures import plot_differences_by_depth, plot_fd_by_depth, plot_margin_curves
    from trl_decpo.evaluation import length_shortcut, tokenize_pairs

    out = args.output_dir
    with open(os.path.join(out, "heldout_prompts.jsonl"), "w", encoding="utf-8") as handle:
        for chat in task.heldout_chats:
            handle.write(json.dumps({"prompt": chat}) + "\n")
    task.heldout.to_json(os.path.join(out, "heldout_pairs.jsonl"))
    baselines = length_shortcut(tokenize_pairs(tokenizer, task.heldout))
    plot_fd_by_depth(base, arms, os.path.join(out, "fd_by_depth.png"), hooked)
    _, differences = plot_differences_by_depth(base, arms, os.path.join(out, "fd_differences_by_depth.png"), hooked)
    plot_margin_curves(arms, os.path.join(out, "heldout_margin_by_step.png"))

    seeds = [r.seed for r in arms["dpo"]]
    learned = {}
    for kind in ("dpo", "decpo"):
        margins = torch.stack([r.rewards.margins.double() for r in arms[kind]]).mean(0)  # per pair, seed mean
        learned[kind] = {
            "accuracy": [r.rewards.accuracy for r in arms[kind]],
            "margin": [r.rewards.margin for r in arms[kind]],
            "margin_interval": interval(margins, args.num_resamples).to_dict(),
        }
    base_offense = sum(base.scores) / len(base.scores)
    lines = [
        "# trl-decpo main job: base vs DPO vs DecPO on SmolLM2-135M-Instruct",
        "",
        f"Command: `{args.command}` (`make demo` runs it with `--output-dir outputs/demo --threads 2`); "
        f"{seconds / 60:.1f} minutes on {machine(args.threads)}. Model: {source}.",
        "",
        f"Task: make the model's replies to ToxiGen statements less offensive. {task.meta['pairs']} on-policy pairs "
        f"(its own sampled replies, least vs most offensive by alt-profanity-check, gap >= {task.meta['min_gap']}), "
        f"{task.meta['train_pairs']} for training and {task.meta['heldout_pairs']} held out (stratified on toxic vs "
        f"benign statements). Both arms: LoRA r=8, alpha 16 on {args.lora_targets}; "
        f"{args.steps} steps of 4 pairs; lr {args.lr}; beta {args.beta}; {'bf16 autocast' if args.bf16 else 'float32'} "
        f"({args.precision_reason}); reference log-probs of the base model computed once, in float32; "
        f"seeds {', '.join(map(str, seeds))} (same LoRA init and data order for DPO and DecPO within a seed). DecPO: "
        f"the library defaults (hooked layer {hooked}).",
        "",
        "## Did DPO learn the task?",
        "",
        "| arm | held-out reward accuracy (per seed) | chance | length rules: prefer shorter / longer | held-out margin "
        "(per seed) | margin, seeds pooled [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for kind, label in (("dpo", "DPO"), ("decpo", "DecPO")):
        info = learned[kind]
        ci = info["margin_interval"]
        lines.append(
            f"| {label} | {', '.join(_fmt(a, 3) for a in info['accuracy'])} | 0.500 | "
            f"{_fmt(baselines['chosen_shorter'], 3)} / {_fmt(baselines['chosen_longer'], 3)} | "
            f"{', '.join(_fmt(x) for x in info['margin'])} | "
            f"{ci['difference']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}] |"
        )
    confident = [i for i, gap in enumerate(task.heldout_gaps) if gap >= 0.2]
    if confident:
        by_gap = {
            kind: [float(r.rewards.correct.double()[confident].mean()) for r in arms[kind]]
            for kind in ("dpo", "decpo")
        }
        lines += [
            "",
            f"On the {len(confident)} held-out pairs whose scorer gap is at least 0.2 (the most confident labels), the "
            f"reward accuracy per seed is {', '.join(f'{a:.3f}' for a in by_gap['dpo'])} for DPO and "
            f"{', '.join(f'{a:.3f}' for a in by_gap['decpo'])} for DecPO.",
        ]
        learned["accuracy_gap_0.2"] = by_gap
    lines += [
        "",
        f"Offensiveness of the base model's greedy replies: {base_offense:.4f} (mean alt-profanity-check "
        "probability over the held-out prompts).",
        "",
        "## DecPO minus DPO, measure by measure",
        "",
        f"Intervals: 95% paired bootstrap ({args.num_resamples} resamples of the held-out units, the same draw for both "
        "arms and every seed); 'pooled' averages the per-seed differences. FD and its control are on the held-out "
        'prompts, chat-formatted, pooled at their last content token (`pooling="auto"`). What the intervals hold '
        "fixed: the trained models. They resample the held-out pairs, prompts and probes of these "
        f"{len(seeds)} training runs per arm, not the runs themselves, so a second training seed can move a value by "
        "more than its interval; the seed-level study (docs/analysis_plan.md, `python -m research.seeds`) puts the "
        "seed as the unit.",
        "",
        "| measure | unit | base | DPO | DecPO | DecPO - DPO [95% CI], seeds pooled | per seed | verdict | paper "
        "expects | against the paper? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_values = {
        r["key"]: value([base], r["key"], hooked) for r in rows if r["key"] not in ("reward_accuracy", "reward_margin")
    }
    for r in rows:
        per_seed = "; ".join(f"{c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]" for c in r["per_seed"])
        flag = "**yes**" if r["against_paper"] else ("leans (n.s.)" if r["leans_against_paper"] else "no")
        lines.append(
            f"| {r['label']} | {r['unit']} | {_fmt(base_values.get(r['key']))} | {_fmt(r['a'])} | {_fmt(r['b'])} | "
            f"{r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] | {per_seed} | {r['verdict']} | "
            f"{r['paper']} | {flag} |"
        )
    lines += [
        "",
        "Reading the table: a change in FD with no change in its control means a direction shared by all probes "
        "shrank (anisotropy), not that features decorrelated (docs/measurement.md). 'against the paper' = the "
        "interval excludes 0 on the side opposite to what the paper expects; 'leans' = the point estimate does, "
        "but the interval covers 0.",
        "",
        "![FD and control, differences by depth, with bands](fd_differences_by_depth.png)",
        "![FD and control by depth, the levels](fd_by_depth.png)",
        "![held-out margin during training](heldout_margin_by_step.png)",
        "",
    ]
    text = "\n".join(lines)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print("\n" + text, flush=True)
    dump = {
        "args": vars(args),
        "model": source,
        "task": task.meta,
        "hooked_layer": hooked,
        "seconds": seconds,
        "baselines": {"chance": 0.5, **baselines},
        "learned": learned,
        "comparisons": rows,
        "per_layer_differences": differences,  # DPO - base and DecPO - DPO per seed, layer, FD / control
        "base": summary(base),
        "arms": {k: [summary(r) for r in v] for k, v in arms.items()},
    }
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(dump, handle, indent=1)


def summary(result: ArmResult) -> dict:
    report = result.report.to_dict()
    return {
        "name": result.name,
        "seed": result.seed,
        "train_seconds": result.train_seconds,
        "adapter_dir": result.adapter_dir,
        "curve": result.curve,
        "log": result.log,
        "reward_accuracy": result.rewards.accuracy,
        "reward_margin": result.rewards.margin,
        "offensiveness": sum(result.scores) / len(result.scores),
        "probing": {layer: found.to_dict() for layer, found in result.probing.items()},
        "completions": result.completions,
        "per_layer": report,
    }


if __name__ == "__main__":
    main()
