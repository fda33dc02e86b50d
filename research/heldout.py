# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Held-out measurements of a policy on preference pairs, from one forward pass per batch (research.demo and
research.defaults_sweep; the numbers of docs/defaults.md and of the demo report, docs/training.md):

* DPO's implicit rewards `beta * (logp_policy - logp_ref)`: accuracy and mean margin (identical to
  `trainer.evaluate()`'s `eval_rewards/accuracies` and `eval_rewards/margins`), see `dpo_rewards`;
* the decorrelation penalty at the hooked layer with `DecPOConfig`'s defaults, averaged over batches as
  `eval_decorrelation/penalty` is;
* feature decorrelation per layer over the held-out prompts, with the library's `ProxyAccumulator` (docs/method.md);
* reference-free preference accuracy (the policy's own log-probabilities of chosen vs rejected).

The batches, the log-probabilities and the rewards are the library's (`trl_decpo.evaluation.preference`); the
penalty and FD are read from the same forward.

    from research.heldout import dpo_rewards, probe
"""

from __future__ import annotations


def heldout_batches(tokenizer, heldout, batch_size: int):
    """The held-out pairs collated as TRL's DPO collator does (`trl_decpo.evaluation.preference_batches`): `[chosen;
    rejected]` right-padded to one width, with `completion_mask`; yields `(input_ids, attention_mask, completion_mask,
    prompt_lengths)`, the prompt length of every row (chosen rows, then rejected rows)."""
    import torch

    from trl_decpo.evaluation import preference_batches

    for batch in preference_batches(tokenizer, heldout, batch_size):
        prompt_lens = torch.cat([batch["prompt_lengths"], batch["prompt_lengths"]])
        yield batch["input_ids"], batch["attention_mask"], batch["completion_mask"], prompt_lens


def probe(model, tokenizer, heldout, args, ref_logps=None) -> dict:
    """Held-out measurements of one model, from one forward pass per batch (eval mode, no_grad); `args` gives
    `eval_batch_size` and `beta`:

    * the decorrelation penalty at the hooked layer with the library's defaults (rows: last real token of every chosen
      and rejected sequence, `decorrelation_penalty(normalize=True, reduction="mean", target="samples")`), averaged over
      the batches exactly as `trainer.evaluate()` averages `eval_decorrelation/penalty`;
    * FD per layer over the held-out prompts: z at the last prompt token, read from the chosen sequences (causal
      attention: identical to a forward of the prompt alone), streamed into the library's `ProxyAccumulator` (the
      value of `feature_decorrelation` / `measure_monosemanticity`; an all-zero row has cosine 0 with every row);
    * sequence log-probabilities of the chosen and rejected completions: reference-free preference accuracy, and, given
      the reference model's log-probabilities, DPO's implicit rewards (`beta * (logp - ref_logp)`).
    """
    import torch

    from trl_decpo import ProxyAccumulator, decorrelation_penalty
    from trl_decpo.capture import ActivationCapture, RowIndex, build_row_index, resolve_sites
    from trl_decpo.evaluation import batch_logps

    model.eval()
    hooked = resolve_sites(model, None)[0]
    sites = resolve_sites(model, list(range(len(model.get_submodule(hooked.prefix)))), hooked.site)
    capture = ActivationCapture(sites)
    accumulators = {site.layer: ProxyAccumulator() for site in sites}
    penalties, chosen_logps, rejected_logps, variance = [], [], [], []
    with torch.no_grad():
        for ids, attention, completion, prompt_lens in heldout_batches(tokenizer, heldout, args.eval_batch_size):
            rows2, width = ids.shape
            half = rows2 // 2
            pen_index = build_row_index("last", "both", ids, attention_mask=attention, completion_mask=completion)
            fd_index = torch.arange(half) * width + prompt_lens[:half] - 1  # last prompt token, chosen half
            both = RowIndex(
                "last", width, torch.cat([pen_index.token_index, fd_index]), num_rows=rows2 + half, batch=len(ids)
            )
            with capture.capture(both) as rows:  # one forward: the hooks and the completion log-probabilities
                batch = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
                chosen, rejected = batch_logps(model, batch)
            penalties.append(
                float(decorrelation_penalty(rows[hooked.layer][:rows2], normalize=True, reduction="mean"))
            )
            for layer, z in rows.items():
                accumulators[layer].update(z[rows2:])
            variance.extend(rows[hooked.layer][rows2:].float().var(dim=1).tolist())
            chosen_logps.extend(chosen.tolist())
            rejected_logps.extend(rejected.tolist())
    n = len(chosen_logps)
    fd = {layer: acc.feature_decorrelation() for layer, acc in accumulators.items()}
    out = {
        "penalty_hooked": sum(penalties) / len(penalties),
        "fd_hooked": fd[hooked.layer],
        "fd_mean_layers": sum(fd.values()) / len(fd),
        "fd_per_layer": [round(fd[i], 5) for i in sorted(fd)],
        "act_var_hooked": sum(variance) / len(variance),
        "pref_acc": sum(c > r for c, r in zip(chosen_logps, rejected_logps, strict=True)) / n,
        "logps": (chosen_logps, rejected_logps),
    }
    if ref_logps is not None:
        out.update(dpo_rewards(out["logps"], ref_logps, args.beta))
    return out


def dpo_rewards(logps, ref_logps, beta: float) -> dict:
    """DPO's implicit rewards `beta * (logp - ref_logp)` on held-out pairs (`trl_decpo.evaluation.dpo_pair_rewards`):
    accuracy, margin, mean rewards."""
    import torch

    from trl_decpo.evaluation import PairLogps, dpo_pair_rewards

    def pair_logps(values):
        chosen, rejected = (torch.tensor(v, dtype=torch.float64) for v in values)
        return PairLogps(chosen, rejected, torch.arange(len(chosen)))

    rewards = dpo_pair_rewards(pair_logps(logps), pair_logps(ref_logps), beta)
    return {
        "heldout_reward_acc": rewards.accuracy,
        "heldout_margin": rewards.margin,
        "heldout_chosen_reward": float(rewards.chosen.mean()),
        "heldout_rejected_reward": float(rewards.rejected.mean()),
    }
