"""What the sharded run scripts (`fsdp2_run.py`, `zero3_run.py`) share: the penalty step (with the injection under
reentrant checkpointing, and optionally each rank's half of the batch with the rows gathered across ranks), the reads
that must equal the bare model's after it (the monosemanticity measurement, a weight read whole from its shards, the
top tokens), and the common ending of a run script (each rank writes its record, then the group goes away together)."""

import json
import os
import sys

import torch
import torch.distributed as dist

from trl_decpo import decorrelation_penalty, measure_monosemanticity, top_tokens
from trl_decpo.capture import ActivationCapture, PenaltyInjection, build_row_index, count_decpo_hooks, resolve_sites
from trl_decpo.capture.ranks import gather_rows
from trl_decpo.monosemanticity.weights import linear_weight


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "yes no", "i think you agree"]
LAYERS = [1, 2]


def penalty_step(forward, module, backward, ids, mask, factor=0.5, split=False):
    """``backward(loss)`` of ``output + factor * penalty`` at ``LAYERS`` of ``module`` (run by ``forward``: the model,
    or its engine), injecting the penalty's gradient where the rows carry none; ``split``: this rank's half of the batch,
    the penalty on the rows of every rank (`decorrelation_across_ranks`). Returns the penalty, what ``backward``
    returns (the squared norm of the whole gradient) and the layers whose rows were captured without a gradient."""
    sites = resolve_sites(module, LAYERS)
    if split:
        half = ids.shape[0] // dist.get_world_size()
        ids, mask = (t[dist.get_rank() * half : (dist.get_rank() + 1) * half] for t in (ids, mask))
    rows_of = gather_rows if split else (lambda r: r)
    index = build_row_index("last", "both", ids, attention_mask=mask)
    capture, injection = ActivationCapture(sites), PenaltyInjection(sites)
    with capture.capture(index) as rows:
        logits = forward(input_ids=ids, attention_mask=mask, use_cache=False).logits
    value = sum(decorrelation_penalty(rows_of(rows[layer])) for layer in LAYERS)
    loss = logits.float().pow(2).mean() + factor * value
    if capture.without_grad:
        injection.arm(sorted(capture.without_grad), index, lambda r: decorrelation_penalty(rows_of(r)), factor)
        loss = injection.probe(loss)
    grad_sq = backward(loss)
    assert injection.disarm() == []
    return float(value.detach()), grad_sq, sorted(capture.without_grad)


def compare_reads(sharded, bare, tokenizer) -> dict:
    """The measurement, layer 1's ``up_proj`` weight (and what the parameter is right after the read) and layer 1's
    top tokens, sharded against bare (eval mode)."""
    for model in (sharded, bare):
        model.eval()
    with torch.no_grad():
        measured = measure_monosemanticity(sharded, PROMPTS, tokenizer)
        reference = measure_monosemanticity(bare, PROMPTS, tokenizer)
    up_proj = sharded.model.layers[1].mlp.up_proj
    weight, _ = linear_weight(up_proj)
    after_read = (type(up_proj.weight).__name__, up_proj.weight.numel())  # still sharded: a DTensor, or ZeRO-3's 0
    tokens = [top_tokens(m, tokenizer, layer=1, k=3, num_tokens=4, prompts=PROMPTS) for m in (sharded, bare)]
    return {
        "fd_diff": max(abs(measured.fd[k] - reference.fd[k]) for k in reference.fd),
        "weight_diff": float((weight - bare.model.layers[1].mlp.up_proj.weight.float()).abs().max()),
        "after_read": after_read,
        "hooks_left": count_decpo_hooks(sharded) + count_decpo_hooks(bare),  # after the steps and the reads
        "top_ids": [[n.token_ids for n in found] for found in tokens],
        "top_logit_diff": max(
            abs(a - b) for x, y in zip(*tokens, strict=True) for a, b in zip(x.logits, y.logits, strict=True)
        ),
    }


def write_record(record: dict, name: str) -> None:
    """``OUT/<name>-rank<r>.json`` (OUT: the script's argument), then every rank done before the group goes away."""
    with open(os.path.join(sys.argv[1], f"{name}-rank{dist.get_rank()}.json"), "w") as f:
        json.dump(record, f)
    dist.barrier()
    dist.destroy_process_group()


def run_main(main) -> None:
    """Run ``main`` and skip the interpreter's teardown, where torch's gloo threads occasionally abort after the work."""
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
