"""FSDP2 (`fully_shard`) over 2 CPU processes (gloo), run by `tests/distributed/test_distributed.py` with
`torchrun --nproc_per_node 2 tests/distributed/fsdp2_run.py OUT` (each rank writes OUT/fsdp2-rank<r>.json). Each decoder
layer and the root are sharded (each rank holds half of every parameter, as DTensor shards). Compared with the bare
model on the same batch: the sites' names, the penalty and the squared norm of its gradient (summed over the shards),
the same under reentrant activation checkpointing (the penalty's gradient injected at the recomputation), the
monosemanticity measurement, the whole weights read by `linear_weight` and the top tokens."""

import torch
import torch.distributed as dist
from sharded_reads import PROMPTS, compare_reads, run_main, write_record

from tests.helpers import make_model, make_tokenizer
from trl_decpo import decorrelation_penalty
from trl_decpo.capture import ActivationCapture, PenaltyInjection, build_row_index, resolve_sites
from trl_decpo.capture.ranks import gather_rows


LAYERS = [1, 2]


def penalty_step(model, ids, mask, factor=0.5, split=False):
    """One backward of ``output + factor * penalty``, injecting the penalty's gradient where the rows carry none;
    returns the penalty and the squared norm of the whole gradient (summed over shards and ranks when sharded)."""
    model.zero_grad()
    sites = resolve_sites(model, LAYERS)
    if split:  # this rank's half of the batch, the penalty on the rows of both (`decorrelation_across_ranks`)
        half = ids.shape[0] // dist.get_world_size()
        ids, mask = (t[dist.get_rank() * half : (dist.get_rank() + 1) * half] for t in (ids, mask))
    rows_of = gather_rows if split else (lambda r: r)
    index = build_row_index("last", "both", ids, attention_mask=mask)
    capture, injection = ActivationCapture(sites), PenaltyInjection(sites)
    with capture.capture(index) as rows:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    value = sum(decorrelation_penalty(rows_of(rows[layer])) for layer in LAYERS)
    loss = logits.float().pow(2).mean() + factor * value
    if capture.without_grad:
        injection.arm(sorted(capture.without_grad), index, lambda r: decorrelation_penalty(rows_of(r)), factor)
        loss = injection.probe(loss)
    loss.backward()
    assert injection.disarm() == []
    squares = []
    for param in model.parameters():
        if param.grad is not None:
            grad = param.grad
            squares.append((grad.to_local() if hasattr(grad, "to_local") else grad).pow(2).sum())
    total = torch.stack(squares).sum()
    if any(hasattr(p, "to_local") for p in model.parameters()):
        dist.all_reduce(total)
    return float(value.detach()), float(total), sorted(capture.without_grad)


def main():
    torch.set_num_threads(1)
    bare, sharded, checkpointed = make_model(), make_model(), make_model()  # same weights
    dist.init_process_group("gloo")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for model in (sharded, checkpointed):
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    for model in (bare, sharded, checkpointed):
        model.train()
    record = {
        "shard": sum(p.to_local().numel() for p in sharded.parameters()),
        "total": sum(p.numel() for p in bare.parameters()),
        "names": [s.name for s in resolve_sites(sharded, LAYERS)],
        "bare_names": [s.name for s in resolve_sites(bare, LAYERS)],
    }
    tokenizer = make_tokenizer()
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    for name, model in (("bare", bare), ("sharded", sharded), ("reentrant", checkpointed)):
        record[name] = penalty_step(model, batch["input_ids"], batch["attention_mask"])
    # each rank half of the batch, the rows gathered: one process's penalty and gradient on the whole batch
    record["split"] = penalty_step(sharded, batch["input_ids"], batch["attention_mask"], split=True)

    record.update(compare_reads(sharded, bare, tokenizer))
    write_record(record, "fsdp2")


if __name__ == "__main__":
    run_main(main)
