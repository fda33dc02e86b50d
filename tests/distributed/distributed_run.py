"""DecPO on a tiny Llama, run by `tests/distributed/test_distributed.py` under `accelerate launch` (2 processes, DDP, gloo on CPU)
and as one process with gradient accumulation over the same micro-batches.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed/distributed_run.py OUT ddp
    python tests/distributed/distributed_run.py OUT single

Both see the same 4 pairs per optimizer step in the same order: rank r of the DDP run takes micro-batch r of each
step (accelerate shards the batches of one sampler), the single process takes micro-batches 0 and 1 of the step with
`gradient_accumulation_steps=2`. With `decorrelation_across_ranks=True`, modes `across` (DDP; `across-reentrant`: with
reentrant activation checkpointing) and `wide` (one process, the step's 4 pairs as one batch): the penalty of the
gathered rows is the penalty of the wide batch. Each process writes `OUT/<mode>-rank<r>.json`: the penalty it computed on each of its
micro-batches (with its token ids), the hooks left on the model afterwards, and, on rank 0, the log history and the
final weights.
"""

import json
import os
import pathlib
import sys

import torch

from tests.helpers import base_kwargs, checkpointing, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOConfig, DecPOTrainer, MonosemanticityCallback, measure_monosemanticity
from trl_decpo.capture import count_decpo_hooks


PROBES = ["the cat sat on the mat", "a dog ran fast", "i think you agree", "yes no", "is the answer good"]  # 5: 3 + 2


def main(out: str, mode: str) -> None:
    torch.set_num_threads(1)
    # before the config starts the process group: each process saves its own copy of the tiny model (transformers
    # saves on rank 0 only once torch.distributed is initialised)
    model, fresh_model, tokenizer = make_model(), make_model(), make_tokenizer()
    accumulation = 2 if mode == "single" else 1
    kwargs = {**base_kwargs(pathlib.Path(out)), "output_dir": os.path.join(out, mode)}
    if mode.startswith("across") or mode == "wide":
        kwargs["decorrelation_across_ranks"] = True
    if mode == "across-reentrant":
        kwargs.update(checkpointing(True, {"use_reentrant": True}))
    kwargs.update(
        per_device_train_batch_size=4 if mode == "wide" else 2,
        gradient_accumulation_steps=accumulation,
        max_steps=3,
        logging_steps=1,
        learning_rate=1e-2,
        ddp_find_unused_parameters=False,
    )
    args = DecPOConfig(**kwargs, decorrelation_coef=1.0, decorrelation_layers=[1, 2])
    initial = {name: p.detach().flatten().tolist() for name, p in model.named_parameters()}
    trainer = DecPOTrainer(model=model, args=args, train_dataset=make_dataset(12), processing_class=tokenizer)
    seen = []
    original = trainer.decorrelation_penalty

    def recording(rows, training=False, deferred=frozenset()):
        total, per_layer = original(rows, training=training, deferred=deferred)
        seen.append({"penalty": float(total), "layers": per_layer.tolist(), "deferred": sorted(deferred)})
        return total, per_layer

    trainer.decorrelation_penalty = recording
    original_compute = trainer.compute_loss

    def compute_loss(model, inputs, *a, **k):
        result = original_compute(model, inputs, *a, **k)
        seen[-1]["input_ids"] = inputs["input_ids"].tolist()
        seen[-1]["wrapped"] = type(model).__name__
        return result

    trainer.compute_loss = compute_loss
    trainer.add_callback(MonosemanticityCallback(trainer, probes=PROBES, plot=False))
    trainer.train()
    rank = trainer.accelerator.process_index
    # the same fresh weights in both modes: under DDP each process measures its shard and the sums are reduced
    fresh = measure_monosemanticity(fresh_model, PROBES, tokenizer, accelerator=trainer.accelerator)
    record = {
        "world": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "micro_batches": seen,
        "hooks_left": count_decpo_hooks(trainer.model),
        "fresh_fd": fresh.fd,
        "fresh_sparsity": fresh.sparsity,
        "fresh_control": fresh.control,
        "fresh_participation_ratio": fresh.participation_ratio,
        "fresh_rows": {layer: fresh.rows(layer).tolist() for layer in fresh.layers},
    }
    if rank == 0:
        record["log_history"] = trainer.state.log_history
        record["initial_weights"] = initial
        record["weights"] = {
            name: p.detach().flatten().tolist()
            for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()
        }
    with open(os.path.join(out, f"{mode}-rank{rank}.json"), "w") as f:
        json.dump(record, f)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # Everything is written: skip the interpreter's teardown, where torch's gloo threads occasionally abort
    # ("terminate called without an active exception") after the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
