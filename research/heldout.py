# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Held-out measurements of a policy on preference pairs, from one forward pass per batch (research.demo and
research.defaults_sweep; the numbers of docs/defaults.md and of the demo report, docs/training.md):

* DPO's implicit rewards `beta * (logp_policy - logp_ref)`: accuracy and mean margin (identical to
  `trainer.evaluate()`'s `eval_rewards/accuracies` and `eval_rewards/margins`), see `dpo_rewards`;
* the decorrelation penalty at the hooked layer with `DecPOConfig`'s defaults, averaged over batches as
  `eval_decorrelation/penalty` is;
* feature decorrelation per layer over the held-out prompts, with the library's `ProxyAccumulator` (docs/method.md);
* reference-free preference accuracy (the policy's own log-probabilities of chosen vs rejected).

    from research.heldout import dpo_rewards, probe
"""

from __future__ import annotations


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

    from trl_decpo import ActivationCapture, ProxyAccumulator, build_row_index, decorrelation_penalty, resolve_sites
    from trl_decpo.capture import RowIndex

    model.eval()
    hooked = resolve_sites(model, None)[0]
    sites = resolve_sites(model, list(range(len(model.get_submodule(hooked.prefix)))), hooked.site)
    capture = ActivationCapture(sites)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
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
            with capture.capture(both) as rows:
                hidden = base.model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            penalties.append(
                float(decorrelation_penalty(rows[hooked.layer][:rows2], normalize=True, reduction="mean"))
            )
            for layer, z in rows.items():
                accumulators[layer].update(z[rows2:])
            variance.extend(rows[hooked.layer][rows2:].float().var(dim=1).tolist())
            # log p(completion): logits only at the positions that predict a completion token
            target = completion[:, 1:].bool()
            logits = base.lm_head(hidden[:, :-1][target]).float()
            token_logps = logits.log_softmax(-1).gather(1, ids[:, 1:][target][:, None]).squeeze(1)
            seq = torch.zeros(rows2).index_add(0, target.nonzero()[:, 0], token_logps)
            chosen_logps.extend(seq[:half].tolist())
            rejected_logps.extend(seq[half:].tolist())
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
    """DPO's implicit rewards `beta * (logp - ref_logp)` on held-out pairs: accuracy, margin, mean rewards."""
    (chosen, rejected), (ref_c, ref_r) = logps, ref_logps
    rc = [beta * (a - b) for a, b in zip(chosen, ref_c, strict=True)]
    rr = [beta * (a - b) for a, b in zip(rejected, ref_r, strict=True)]
    n = len(rc)
    return {
        "heldout_reward_acc": sum(c > r for c, r in zip(rc, rr, strict=True)) / n,
        "heldout_margin": sum(c - r for c, r in zip(rc, rr, strict=True)) / n,
        "heldout_chosen_reward": sum(rc) / n,
        "heldout_rejected_reward": sum(rr) / n,
    }
