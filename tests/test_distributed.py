"""Distributed runs (issue 6, item 1), on CPU with the gloo backend.

`accelerate launch --multi_gpu --num_processes 2` (DDP) against one process with `gradient_accumulation_steps=2`
over the same micro-batches (`tests/distributed_run.py`). Compared quantities:

* the penalty each rank computes on its own micro-batch == the one-process penalty on that micro-batch (step 1
  exactly the same weights: rel 1e-6; later steps rel 1e-4, the weights agreeing to float32 rounding);
* the logged `decorrelation/penalty` and `decorrelation/layer_<i>` of each step == the mean of the two ranks' values
  (one gather and mean across ranks, as TRL aggregates its own metrics) == the one-process log (the mean of its two
  micro-batches), rel 1e-4; the logged DPO loss likewise;
* the final weights (DDP averages the gradients of DPO loss + penalty, as accumulation does): atol 1e-5;
* the monosemanticity measurement sharded over the two processes (3 + 2 prompts, reduced) == one process, 1e-9;
* no trl-decpo hook left on either rank.

Also FSDP (FULL_SHARD, FSDP1 module names `_fsdp_wrapped_module`): sites resolve and the measurement through the
wrapped model equals the bare model's.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest


HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_run.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                     "MASTER_"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=HERE)
    return env


def run(argv, timeout=600):
    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("distributed"))
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", str(free_port()), SCRIPT, out, "ddp"])
    run([sys.executable, SCRIPT, out, "single"])

    def load(name):
        with open(os.path.join(out, name)) as f:
            return json.load(f)

    return [load("ddp-rank0.json"), load("ddp-rank1.json")], load("single-rank0.json")


def test_two_processes_really_ran_ddp_with_gloo(runs):
    ddp, single = runs
    assert [r["world"] for r in ddp] == [2, 2] and single["world"] == 1
    assert all(r["distributed_type"].endswith("MULTI_CPU") for r in ddp)
    assert {mb["wrapped"] for r in ddp for mb in r["micro_batches"]} == {"DistributedDataParallel"}
    assert all(r["hooks_left"] == 0 for r in ddp) and single["hooks_left"] == 0


def test_each_rank_penalises_its_own_rows(runs):
    ddp, single = runs
    micro = single["micro_batches"]
    assert len(micro) == 6 and all(len(r["micro_batches"]) == 3 for r in ddp)
    for step in range(3):
        for rank in range(2):
            mine, reference = ddp[rank]["micro_batches"][step], micro[2 * step + rank]
            assert mine["input_ids"] == reference["input_ids"]  # same split of the data: the precondition
            tol = 1e-6 if step == 0 else 1e-4
            assert mine["penalty"] == pytest.approx(reference["penalty"], rel=tol)
            assert mine["layers"] == pytest.approx(reference["layers"], rel=tol)
        # the two ranks saw different rows, so their penalties differ: the comparison above is not vacuous
        assert ddp[0]["micro_batches"][step]["input_ids"] != ddp[1]["micro_batches"][step]["input_ids"]


def test_logged_metrics_are_the_mean_over_ranks_and_match_one_process(runs):
    ddp, single = runs
    logs = {h["step"]: h for h in ddp[0]["log_history"] if "decorrelation/penalty" in h and "loss" in h}
    single_logs = {h["step"]: h for h in single["log_history"] if "decorrelation/penalty" in h and "loss" in h}
    assert sorted(logs) == sorted(single_logs) == [1, 2, 3]
    for step in (1, 2, 3):
        ranks = [r["micro_batches"][step - 1] for r in ddp]
        assert logs[step]["decorrelation/penalty"] == pytest.approx(sum(r["penalty"] for r in ranks) / 2, rel=1e-6)
        for i, layer in enumerate((1, 2)):
            key = f"decorrelation/layer_{layer}"
            assert logs[step][key] == pytest.approx(sum(r["layers"][i] for r in ranks) / 2, rel=1e-6)
            assert logs[step][key] == pytest.approx(single_logs[step][key], rel=1e-4)
        assert logs[step]["decorrelation/penalty"] == pytest.approx(single_logs[step]["decorrelation/penalty"], rel=1e-4)
        assert logs[step]["loss"] == pytest.approx(single_logs[step]["loss"], rel=1e-4)
    # the callback's measurements reach the log the same way (rank 0 writes them; values agree with one process)
    fd = [h for h in ddp[0]["log_history"] if "eval_monosemanticity/fd/mean" in h]
    fd_single = [h for h in single["log_history"] if "eval_monosemanticity/fd/mean" in h]
    assert len(fd) == len(fd_single) == 2
    for a, b in zip(fd, fd_single):
        assert a["eval_monosemanticity/fd/mean"] == pytest.approx(b["eval_monosemanticity/fd/mean"], rel=1e-4)


def test_final_weights_match_one_process(runs):
    ddp, single = runs
    import torch

    assert ddp[0]["weights"].keys() == single["weights"].keys()
    moved = 0
    for name, values in ddp[0]["weights"].items():
        a, b = torch.tensor(values), torch.tensor(single["weights"][name])
        assert torch.allclose(a, b, atol=1e-5), name
        moved += 1
    assert moved > 10


def test_sharded_measurement_equals_one_process(runs):
    ddp, single = runs
    for rank in range(2):
        for key in ("fresh_fd", "fresh_sparsity"):
            assert ddp[rank][key].keys() == single[key].keys()
            for layer, value in single[key].items():
                assert ddp[rank][key][layer] == pytest.approx(value, abs=1e-9)


FSDP_CHECK = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {here!r})
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
dist.init_process_group("gloo", rank=0, world_size=1)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from conftest import make_model, make_tokenizer
from trl_decpo import measure_monosemanticity, resolve_sites
prompts = ["the cat sat", "a dog ran fast", "yes no", "i think"]
bare = make_model()
want = measure_monosemanticity(bare, prompts, make_tokenizer())
wrapped = FSDP(make_model(), auto_wrap_policy=ModuleWrapPolicy({{LlamaDecoderLayer}}), device_id=torch.device("cpu"),
               use_orig_params=True)
names = [s.name for s in resolve_sites(wrapped, [0, -1])]
got = measure_monosemanticity(wrapped, prompts, make_tokenizer())
print("NAMES", names)
print("MAXDIFF", max(abs(got.fd[k] - want.fd[k]) for k in want.fd))
dist.destroy_process_group()
"""


def test_fsdp_wrapped_module_names_resolve_and_measure_like_the_bare_model():
    done = run([sys.executable, "-c", FSDP_CHECK.format(here=HERE, port=free_port())], timeout=300)
    names = next(line for line in done.stdout.splitlines() if line.startswith("NAMES"))
    assert "layers.0._fsdp_wrapped_module.mlp.up_proj" in names and "layers.3._fsdp_wrapped_module.mlp.up_proj" in names
    diff = float(next(line for line in done.stdout.splitlines() if line.startswith("MAXDIFF")).split()[1])
    assert diff < 1e-6
