"""DeepSpeed ZeRO-3 over 2 CPU processes (gloo), run by `tests/distributed/test_distributed.py` with
`torchrun --nproc_per_node 2 tests/distributed/zero3_run.py OUT` (each rank writes OUT/zero3-rank<r>.json), driving
`deepspeed.initialize` directly (through the HF Trainer on a CPU-only machine accelerate runs ZeRO-3 as one process).
Every parameter is partitioned (`stage3_param_persistence_threshold: 0`: a tiny model's parameters would otherwise
stay whole). Compared with the bare model on the same batch: the sites' names, the penalty and the squared norm of its
gradient (gathered with `safe_get_full_grad`), the same under reentrant activation checkpointing (the penalty's
gradient injected at the recomputation: the recipe TRL forces for PEFT under ZeRO-3), the monosemanticity
measurement, the whole weights `linear_weight` reads from the partitions and the top tokens. A ZeRO-2 engine too
(gradients partitioned, parameters whole): the penalty and its gradient."""

import torch
from sharded_reads import LAYERS, PROMPTS, compare_reads, run_main, write_record
from sharded_reads import penalty_step as shared_step

from tests.helpers import make_model, make_tokenizer
from trl_decpo.capture import resolve_sites


CONFIG = {
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 1,
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
    "zero_allow_untested_optimizer": True,  # a plain torch SGD with learning rate 0: only the gradients are read
    "fp16": {"enabled": False},
    "bf16": {"enabled": False},
}


def penalty_step(model, ids, mask, engine=None, split=False):
    """The shared step through ``engine`` (its backward) or on the bare ``model``; the squared norm of the whole
    gradient (gathered with `safe_get_full_grad` from an engine)."""
    from deepspeed.utils import safe_get_full_grad

    module = engine.module if engine is not None else model

    def backward(loss):
        if engine is not None:
            engine.backward(loss)
            grads = [safe_get_full_grad(p) for p in module.parameters()]
        else:
            loss.backward()
            grads = [p.grad for p in module.parameters()]
        return float(torch.stack([g.pow(2).sum() for g in grads if g is not None]).sum())

    return shared_step(engine or model, module, backward, ids, mask, split=split)


def main():
    torch.set_num_threads(1)
    bare, partitioned, checkpointed, stage2, split = (make_model() for _ in range(5))  # same weights
    import importlib

    import deepspeed

    # DeepSpeed compiles a shared-memory all-reduce for CPUs (C++, with ninja) on first use: not needed here (gloo).
    # (`deepspeed.comm.torch` as an attribute is the torch package, which deepspeed.comm imports under that name.)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")

    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    engines = {}
    # one backward per engine (an engine keeps its partitioned gradients until its step)
    stages = (("zero3", partitioned, 3), ("reentrant", checkpointed, 3), ("zero2", stage2, 2), ("split", split, 3))
    for name, model, stage in stages:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        config = {**CONFIG, "zero_optimization": {**CONFIG["zero_optimization"], "stage": stage}}
        engines[name], *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    bare.train()
    up_proj = engines["zero3"].module.model.layers[1].mlp.up_proj
    record = {
        "partitioned": [hasattr(p, "ds_id") for p in engines["zero3"].module.parameters()],
        "numel_outside_forward": up_proj.weight.numel(),
        "names": [s.name for s in resolve_sites(engines["zero3"].module, LAYERS)],
        "bare_names": [s.name for s in resolve_sites(bare, LAYERS)],
    }
    tokenizer = make_tokenizer()
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    record["bare"] = penalty_step(bare, batch["input_ids"], batch["attention_mask"])
    for name, engine in engines.items():  # "split": each rank half of the batch, the rows of both gathered
        record[name] = penalty_step(None, batch["input_ids"], batch["attention_mask"], engine, split=name == "split")

    record.update(compare_reads(engines["zero3"].module, bare, tokenizer))
    write_record(record, "zero3")


if __name__ == "__main__":
    run_main(main)
