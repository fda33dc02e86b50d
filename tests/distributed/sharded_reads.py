"""What the sharded run scripts (`fsdp2_run.py`, `zero3_run.py`) share: after the penalty steps, the reads that must
equal the bare model's (the monosemanticity measurement, a weight read whole from its shards, the top tokens), and the
common ending of a run script (each rank writes its record, then the group goes away together)."""

import json
import os
import sys

import torch
import torch.distributed as dist

from trl_decpo import measure_monosemanticity, top_tokens
from trl_decpo.capture import count_decpo_hooks
from trl_decpo.monosemanticity.weights import linear_weight


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "yes no", "i think you agree"]


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
