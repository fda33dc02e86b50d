"""FSDP1 FULL_SHARD over 2 CPU processes (gloo), run by `tests/distributed/test_distributed.py` with
`torchrun --nproc_per_node 2 tests/distributed/fsdp_run.py OUT` (each rank writes OUT/fsdp-rank<r>.json): our sites resolve through `_fsdp_wrapped_module` names, hooks fire
under sharded parameters, and the penalty (value and gradient) and the measurement equal the bare model's."""

import torch
import torch.distributed as dist
from sharded_reads import run_main, write_record

from tests.helpers import make_model, make_tokenizer
from trl_decpo import decorrelation_penalty, measure_monosemanticity
from trl_decpo.capture import ActivationCapture, build_row_index, resolve_sites


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "yes no", "i think you agree"]


def penalty(model, ids, mask):
    capture = ActivationCapture(resolve_sites(model, [1, 2]))
    with capture.capture(build_row_index("last", "both", ids, attention_mask=mask)) as rows:
        logits = model(input_ids=ids, attention_mask=mask).logits
    value = decorrelation_penalty(torch.stack([rows[1], rows[2]]), reduction="mean").sum()
    # as in training, the model's output is part of the loss: FSDP unshards a layer's weights for its backward when
    # the gradient reaches the layer's output (a loss made of the penalty alone never reaches it)
    return value, value + 0.0 * logits.float().sum()


def main():
    torch.set_num_threads(1)
    bare, sharded = make_model(), make_model()  # same weights; saved before the process group exists
    dist.init_process_group("gloo")
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    wrapped = FullyShardedDataParallel(
        sharded,
        auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer}),
        device_id=torch.device("cpu"),
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        use_orig_params=True,
    )
    record = {
        "shard": sum(p.numel() for p in wrapped.parameters()),
        "total": sum(p.numel() for p in bare.parameters()),
        "names": [s.name for s in resolve_sites(wrapped, [1, 2])],
    }

    tokenizer = make_tokenizer()
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    want, loss = penalty(bare, batch["input_ids"], batch["attention_mask"])
    loss.backward()
    got, loss = penalty(wrapped, batch["input_ids"], batch["attention_mask"])
    loss.backward()  # FSDP reduce-scatters: each rank keeps the mean gradient of its shard (same batch on both ranks)
    local_sq = torch.stack([p.grad.pow(2).sum() for p in wrapped.parameters() if p.grad is not None]).sum()
    dist.all_reduce(local_sq)
    bare_sq = torch.stack([p.grad.pow(2).sum() for p in bare.parameters() if p.grad is not None]).sum()
    record.update(penalty=float(got), bare_penalty=float(want), grad_sq=float(local_sq), bare_grad_sq=float(bare_sq))

    with torch.no_grad():
        measured = measure_monosemanticity(wrapped, PROMPTS, tokenizer)
        reference = measure_monosemanticity(bare, PROMPTS, tokenizer)
    record["fd_diff"] = max(abs(measured.fd[k] - reference.fd[k]) for k in reference.fd)
    write_record(record, "fsdp")


if __name__ == "__main__":
    run_main(main)
