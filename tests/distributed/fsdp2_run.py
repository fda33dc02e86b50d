"""FSDP2 (`fully_shard`) over 2 CPU processes (gloo), run by `tests/distributed/test_distributed.py` with
`torchrun --nproc_per_node 2 tests/distributed/fsdp2_run.py OUT` (each rank writes OUT/fsdp2-rank<r>.json). Each decoder
layer and the root are sharded (each rank holds half of every parameter, as DTensor shards). Compared with the bare
model on the same batch: the sites' names, the penalty and the squared norm of its gradient (summed over the shards),
the same under reentrant activation checkpointing (the penalty's gradient injected at the recomputation), the
monosemanticity measurement, the whole weights read by `linear_weight` and the top tokens."""

import torch
import torch.distributed as dist
from sharded_reads import LAYERS, PROMPTS, compare_reads, run_main, write_record
from sharded_reads import penalty_step as shared_step

from tests.helpers import make_model, make_tokenizer
from trl_decpo.capture import resolve_sites


def penalty_step(model, ids, mask, split=False):
    """The shared step on ``model`` itself; the squared gradient norm summed over the shards (and ranks)."""

    def backward(loss):
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        total = torch.stack([(g.to_local() if hasattr(g, "to_local") else g).pow(2).sum() for g in grads]).sum()
        if any(hasattr(p, "to_local") for p in model.parameters()):
            dist.all_reduce(total)
        return float(total)

    model.zero_grad()
    return shared_step(model, model, backward, ids, mask, split=split)


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
