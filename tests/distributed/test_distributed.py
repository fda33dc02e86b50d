"""Distributed runs, on CPU with the gloo backend.

`accelerate launch --multi_gpu --num_processes 2` (DDP) against one process with `gradient_accumulation_steps=2`
over the same micro-batches (`tests/distributed/distributed_run.py`). Compared quantities:

* the penalty each rank computes on its own micro-batch == the one-process penalty on that micro-batch (step 1
  exactly the same weights: rel 1e-6; later steps rel 1e-4, the weights agreeing to float32 rounding);
* the logged `decorrelation/penalty` and `decorrelation/layer_<i>` of each step == the mean of the two ranks' values
  (one gather and mean across ranks, as TRL aggregates its own metrics) == the one-process log (the mean of its two
  micro-batches), rel 1e-4; the logged DPO loss likewise;
* the final weights (DDP averages the gradients of DPO loss + penalty, as accumulation does): atol 1e-5;
* the monosemanticity measurement sharded over the two processes (3 + 2 prompts, reduced) == one process, 1e-9; the
  rows gathered back into prompt order (the top-up row dropped) == one process's, so the FD control and participation
  ratio agree too;
* no trl-decpo hook left on either rank;
* the `trl-decpo dpo` script under 2 processes refuses a used `--output_dir` on both ranks together, and resumes together.

Also FSDP1 FULL_SHARD over 2 processes (`tests/distributed/fsdp_run.py` under `torchrun`): sites resolve through the
`_fsdp_wrapped_module` names, the hooks fire under sharded parameters, and the penalty, its gradient and the
measurement equal the bare model's; and FSDP2 `fully_shard` (`tests/distributed/fsdp2_run.py`): the same, with
reentrant checkpointing as well, and the weights and top tokens read whole from the shards.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest


HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_run.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))
    }
    env.update(
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(
            [HERE, os.path.dirname(os.path.dirname(HERE))]
        ),  # the run scripts and tests.helpers
        GLOO_SOCKET_IFNAME="lo",
        DS_ACCELERATOR="cpu",  # DeepSpeed on a machine without GPUs (its gloo fallback when oneCCL is absent)
        HF_HOME=tempfile.mkdtemp(prefix="decpo-hf-home-"),
    )  # no user `accelerate config` default file
    return env


# Launch failures that are the machine's or torch's, not ours: a port taken between `free_port()` and the launcher
# binding it, and an abort in torch's gloo teardown at interpreter exit after the work is done.
PORT_TAKEN = ("address already in use", "eaddrinuse", "errno 98", "terminate called without an active exception")


def attempt(make_argv, timeout):
    """One multi-process launch on a fresh port; ``None`` when it could not start, hung, or aborted in torch's
    teardown (see PORT_TAKEN), so the caller may try once more."""
    try:
        done = subprocess.run(make_argv(free_port()), env=clean_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 and any(key in done.stderr.lower() for key in PORT_TAKEN):
        return None
    return done


def launch(make_argv, timeout=180, check=True):
    """Runs a 2-process launch; retried once if it could not start or hung (machine noise), so a real failure still
    fails: both attempts must go wrong the same way."""
    done = attempt(make_argv, timeout) or attempt(make_argv, timeout)
    assert done is not None, f"{make_argv(0)[:3]}... hung or could not bind a port twice"
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def run(argv, timeout=600):
    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def accelerate_launch(port: int) -> list[str]:
    """`accelerate launch` of 2 CPU processes (DDP, gloo), no mixed precision, on `port`."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    return [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"] + [
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port))
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("distributed"))
    launch(
        lambda port: [
            *accelerate_launch(port),
            SCRIPT,
            out,
            "ddp",
        ]
    )
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
        assert logs[step]["decorrelation/penalty"] == pytest.approx(
            single_logs[step]["decorrelation/penalty"], rel=1e-4
        )
        assert logs[step]["loss"] == pytest.approx(single_logs[step]["loss"], rel=1e-4)
    # the callback's measurements reach the log the same way (rank 0 writes them; values agree with one process)
    fd = [h for h in ddp[0]["log_history"] if "eval_monosemanticity/fd/mean" in h]
    fd_single = [h for h in single["log_history"] if "eval_monosemanticity/fd/mean" in h]
    assert len(fd) == len(fd_single) == 2
    for a, b in zip(fd, fd_single, strict=False):
        assert a["eval_monosemanticity/fd/mean"] == pytest.approx(b["eval_monosemanticity/fd/mean"], rel=1e-4)


def test_final_weights_match_one_process(runs):
    ddp, single = runs
    import torch

    assert ddp[0]["weights"].keys() == single["weights"].keys() == single["initial_weights"].keys()
    moved = 0
    for name, values in ddp[0]["weights"].items():
        a, b = torch.tensor(values), torch.tensor(single["weights"][name])
        assert torch.allclose(a, b, atol=1e-5), name
        moved += not torch.allclose(a, torch.tensor(single["initial_weights"][name]), atol=1e-4)
    assert moved > 10  # training moved the weights: the agreement is not that of two untouched copies


def test_sharded_measurement_equals_one_process(runs):
    ddp, single = runs
    import torch

    for rank in range(2):
        for key in ("fresh_fd", "fresh_sparsity", "fresh_control", "fresh_participation_ratio"):
            assert ddp[rank][key].keys() == single[key].keys()
            for layer, value in single[key].items():
                assert ddp[rank][key][layer] == pytest.approx(value, abs=1e-9), (key, layer)
        for layer, rows in single["fresh_rows"].items():
            assert len(ddp[rank]["fresh_rows"][layer]) == len(rows) == 5  # 3 + 2 prompts, the top-up row dropped
            assert torch.allclose(torch.tensor(ddp[rank]["fresh_rows"][layer]), torch.tensor(rows), atol=1e-6)


def torchrun_script(script: str, out) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    launch(
        lambda port: [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            os.path.join(HERE, script),
            str(out),
        ]
    )


def test_fsdp_full_shard_hooks_penalty_and_measurement_match_the_bare_model(tmp_path):
    """FSDP1 FULL_SHARD over 2 processes: half the parameters per rank, sites found through `_fsdp_wrapped_module`,
    the penalty and its gradient (squared norm, summed over the shards) and the measurement equal the bare model's."""
    torchrun_script("fsdp_run.py", tmp_path)
    for rank in range(2):
        with open(tmp_path / f"fsdp-rank{rank}.json") as f:
            r = json.load(f)
        assert r["shard"] * 2 == r["total"]
        assert [n.split("layers.")[1] for n in r["names"]] == [
            "1._fsdp_wrapped_module.mlp.up_proj",
            "2._fsdp_wrapped_module.mlp.up_proj",
        ]
        assert r["penalty"] == pytest.approx(r["bare_penalty"], rel=1e-6) and r["bare_penalty"] > 0
        assert r["grad_sq"] == pytest.approx(r["bare_grad_sq"], rel=1e-5) and r["bare_grad_sq"] > 0
        assert r["fd_diff"] < 1e-9


@pytest.fixture(scope="module")
def across_runs(tmp_path_factory):
    """`decorrelation_across_ranks=True`: DDP over 2 processes (plain, and with reentrant checkpointing) and one
    process holding the step's 4 pairs as one batch."""
    out = str(tmp_path_factory.mktemp("across"))
    for mode in ("across", "across-reentrant"):
        launch(lambda port, mode=mode: [*accelerate_launch(port), SCRIPT, out, mode])
    run([sys.executable, SCRIPT, out, "wide"])

    def load(name):
        with open(os.path.join(out, name)) as f:
            return json.load(f)

    return {
        mode: [load(f"{mode}-rank0.json"), load(f"{mode}-rank1.json")] for mode in ("across", "across-reentrant")
    } | {"wide": load("wide-rank0.json")}


@pytest.mark.parametrize("mode", ["across", "across-reentrant"])
def test_rows_across_ranks_give_the_penalty_and_the_step_of_the_global_batch(across_runs, runs, mode):
    """With the rows of both ranks in one Gram, each rank's penalty is the one-process penalty of the step's 4 pairs
    as one batch (not the mean of two 2-pair penalties, which the plain DDP run computes), and DDP's step is that
    process's step: the gathered rows' gradient is the global batch's (the same under reentrant checkpointing, where
    the gathering runs again inside the backward's recomputation)."""
    import torch

    ddp, wide = across_runs[mode], across_runs["wide"]
    assert len(wide["micro_batches"]) == 3 and all(len(r["micro_batches"]) == 3 for r in ddp)
    deferred = [1, 2] if mode == "across-reentrant" else []
    for step in range(3):
        reference = wide["micro_batches"][step]
        tol = 1e-6 if step == 0 else 1e-4
        for rank in range(2):
            mine = ddp[rank]["micro_batches"][step]
            assert mine["penalty"] == pytest.approx(reference["penalty"], rel=tol)
            assert mine["layers"] == pytest.approx(reference["layers"], rel=tol)
            assert mine["deferred"] == deferred
    own = [r["micro_batches"][0]["penalty"] for r in runs[0]]  # the plain DDP run: each rank's own rows
    assert abs(sum(own) / 2 - wide["micro_batches"][0]["penalty"]) > 1e-3  # the comparison above is not vacuous
    logs = {h["step"]: h for h in ddp[0]["log_history"] if "decorrelation/penalty" in h and "loss" in h}
    wide_logs = {h["step"]: h for h in wide["log_history"] if "decorrelation/penalty" in h and "loss" in h}
    for step in (1, 2, 3):
        assert logs[step]["decorrelation/penalty"] == pytest.approx(wide_logs[step]["decorrelation/penalty"], rel=1e-4)
        assert logs[step]["loss"] == pytest.approx(wide_logs[step]["loss"], rel=1e-4)
    moved = 0
    for name, values in ddp[0]["weights"].items():
        a, b = torch.tensor(values), torch.tensor(wide["weights"][name])
        assert torch.allclose(a, b, atol=1e-5), name
        moved += not torch.allclose(a, torch.tensor(wide["initial_weights"][name]), atol=1e-4)
    assert moved > 10


def assert_sharded_run_matches_the_bare_model(r: dict, sharded: str) -> None:
    """A sharded run's record (`sharded_reads.py`): the penalty and its gradient's squared norm equal the bare model's,
    without checkpointing, under reentrant checkpointing (there the rows of layers 1 and 2 were captured without a
    gradient and their gradient injected), and with each rank holding half of the batch and the rows gathered across
    ranks (one process on the global batch); and so do the measurement, the weight read whole and the top tokens."""
    bare_penalty, bare_grad, bare_deferred = r["bare"]
    assert bare_penalty > 0 and bare_grad > 0 and bare_deferred == []
    for name, deferred in ((sharded, []), ("reentrant", [1, 2]), ("split", [])):
        penalty, grad, got_deferred = r[name]
        assert penalty == pytest.approx(bare_penalty, rel=1e-6), name
        assert grad == pytest.approx(bare_grad, rel=1e-5), name
        assert got_deferred == deferred, name
    assert r["fd_diff"] < 1e-9 and r["weight_diff"] < 1e-7 and r["hooks_left"] == 0
    assert r["top_ids"][0] == r["top_ids"][1] and r["top_logit_diff"] < 1e-5


def test_fsdp2_fully_shard_penalty_reentrant_injection_measurement_and_weights_match_the_bare_model(tmp_path):
    """FSDP2 over 2 processes (each decoder layer and the root `fully_shard`ed): the sites keep their names, the
    penalty and its gradient equal the bare model's, with reentrant checkpointing too (the gradient injected at the
    recomputation), and so do the measurement, the whole weights `linear_weight` reads from the shards (which stay
    shards) and the top tokens."""
    torchrun_script("fsdp2_run.py", tmp_path)
    for rank in range(2):
        with open(tmp_path / f"fsdp2-rank{rank}.json") as f:
            r = json.load(f)
        assert r["shard"] * 2 == r["total"] and r["names"] == r["bare_names"] and r["after_read"][0] == "DTensor"
        assert_sharded_run_matches_the_bare_model(r, "sharded")


def test_deepspeed_zero3_penalty_reentrant_injection_measurement_and_weights_match_the_bare_model(tmp_path):
    """DeepSpeed ZeRO-3 over 2 processes, every parameter partitioned: the sites keep their names, the penalty and its
    gradient equal the bare model's, with reentrant checkpointing too (the gradient injected at the recomputation),
    and so do the measurement, the whole weights `linear_weight` reads from the partitions (which stay partitioned)
    and the top tokens."""
    torchrun_script("zero3_run.py", tmp_path)
    for rank in range(2):
        with open(tmp_path / f"zero3-rank{rank}.json") as f:
            r = json.load(f)
        assert all(r["partitioned"]) and r["numel_outside_forward"] == 0 and r["names"] == r["bare_names"]
        assert_sharded_run_matches_the_bare_model(r, "zero3")
        penalty, grad, deferred = r["zero2"]  # ZeRO-2: gradients partitioned, parameters whole
        assert penalty == pytest.approx(r["bare"][0], rel=1e-6) and grad == pytest.approx(r["bare"][1], rel=1e-5)
        assert deferred == []
        assert r["after_read"][1] == 0  # partitioned again after the weights were read whole


def test_two_processes_refuse_a_used_output_dir_together(tmp_path):
    """The `trl-decpo dpo` script (what the command launches) under 2 processes: the main process decides about `--output_dir` and both stop with the same
    message (no rank left waiting for the other), and with `--resume_from_checkpoint` both resume."""
    from tests.helpers import FAST_TRAIN_ARGS, PAIRS, model_path

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p, "chosen": " " + c, "rejected": " " + r}) for p, c, r in PAIRS))
    out = tmp_path / "run"
    base = [
        "--model_name_or_path",
        model_path(),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        *FAST_TRAIN_ARGS,
        "--monosemanticity",
        "false",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
    ]

    def train(*extra):
        return launch(
            lambda port: [
                *accelerate_launch(port),
                "-m",
                "trl_decpo.cli.scripts.dpo",
                *base,
                *extra,
            ],
            # a retry after a slow first attempt that already wrote its checkpoint would resume from that one: give
            # each attempt the time a loaded 2-core machine needs
            timeout=600,
            check=False,
        )

    assert train("--max_steps", "1").returncode == 0
    refused = train("--max_steps", "2")
    assert refused.returncode != 0
    assert refused.stderr.count("already holds a run with checkpoints ['checkpoint-1']") == 2  # both ranks say it
    resumed = train("--max_steps", "2", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from checkpoint-1" in resumed.stderr and (out / "checkpoint-2").is_dir()
