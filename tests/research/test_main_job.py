# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The main job (`make demo` = `python -m research.demo`): its task, its statistics and the whole pipeline on a tiny
model (the real run needs SmolLM2 and the offline scorer, see docs/main_job.md)."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from research import evidence, task

from tests.helpers import model_path, research_model_dir
from trl_decpo.evaluation.preference import PairRewards
from trl_decpo.evaluation.stats import NO_DIFFERENCE


class TemplateTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<user>" + messages[-1]["content"] + "<assistant>"


def test_pairs_follow_the_rule_and_the_split_is_clean_and_stratified():
    meta, records = task.read_records()
    assert len(records) == 200 and all(len(r["samples"]) == len(r["scores"]) == meta["samples"] for r in records)
    loaded = task.load_task(TemplateTokenizer(), min_gap=0.1)
    by_prompt = {"<user>" + r["prompt"] + "<assistant>": r for r in records}
    for split in (loaded.train, loaded.heldout):
        for row in split:
            scores = dict(zip(by_prompt[row["prompt"]]["samples"], by_prompt[row["prompt"]]["scores"], strict=True))
            assert scores[row["chosen"]] == min(scores.values()) and scores[row["rejected"]] == max(scores.values())
            assert scores[row["rejected"]] - scores[row["chosen"]] >= 0.1
    kept = sum(task.make_pair(r, 0.1) is not None for r in records)
    assert len(loaded.train) + len(loaded.heldout) == kept
    assert not set(loaded.train["prompt"]) & set(loaded.heldout["prompt"])
    toxic = {"<user>" + r["prompt"] + "<assistant>" for r in records if r["is_toxic"]}
    share = lambda split: sum(p in toxic for p in split["prompt"]) / len(split)  # noqa: E731
    assert abs(share(loaded.heldout) - share(loaded.train)) < 0.05
    assert [c[-1]["content"] for c in loaded.heldout_chats] == [
        by_prompt[p]["prompt"] for p in loaded.heldout["prompt"]
    ]
    assert all(c[0] == {"role": "system", "content": meta["system"]} for c in loaded.heldout_chats)
    assert task.load_task(TemplateTokenizer(), min_gap=0.1).heldout["prompt"] == loaded.heldout["prompt"]


class RecordingTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        assert add_generation_prompt and not tokenize
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_training_prompts_are_the_prompts_the_pairs_were_sampled_from():
    # on-policy: research/onpolicy_pairs renders each statement with `render_prompt` and the pairs file's system
    # message; the training and held-out prompts must be that same text
    meta, records = task.read_records()
    assert meta["system"]
    loaded = task.load_task(RecordingTokenizer(), min_gap=0.1)
    sampled = {task.render_prompt(RecordingTokenizer(), r["prompt"], meta["system"]) for r in records}
    assert set(loaded.train["prompt"]) | set(loaded.heldout["prompt"]) <= sampled
    assert all(p.startswith(f"system:{meta['system']}|user:") for p in loaded.heldout["prompt"])


class FakeReport:
    def __init__(self, rows: dict):
        self.rows, self.layers = rows, sorted(rows)

    def gram(self, layer):
        z = self.rows[layer].double()
        return z @ z.T

    def row_sparsity(self, layer):
        return self.rows[layer].double().var(dim=1, correction=0)


def fake_arm(seed, shift=0.0, shared=1.0, offense=0.0, probed=0.0):
    generator = torch.Generator().manual_seed(seed)
    rows = {i: torch.randn(12, 6, generator=generator) + shared * torch.ones(6) for i in range(3)}
    chosen = torch.randn(20, generator=generator, dtype=torch.float64)
    rewards = PairRewards(chosen + shift, chosen - shift, beta=0.1)
    scores = (torch.rand(15, generator=generator) + offense).tolist()
    correct = (torch.rand(30, generator=generator) < 0.6 + probed).int().tolist()  # the k = 1 probe's held-out hits
    probing = {1: SimpleNamespace(correct={1: correct})}
    return SimpleNamespace(seed=seed, rewards=rewards, report=FakeReport(rows), scores=scores, probing=probing)


def test_compare_pools_seeds_and_says_no_detectable_difference_for_identical_arms():
    dpo = [fake_arm(0), fake_arm(1)]
    rows = {r["key"]: r for r in evidence.compare(dpo, dpo, hooked=1, num_resamples=200)}
    assert set(rows) == {m.key for m in evidence.MEASURES}
    for row in rows.values():
        assert row["difference"] == 0 and row["low"] == 0 and row["high"] == 0
        assert row["verdict"] == NO_DIFFERENCE and not row["against_paper"] and len(row["per_seed"]) == 2


def test_compare_finds_planted_effects_and_flags_the_ones_against_the_paper():
    dpo = [fake_arm(0), fake_arm(1)]
    # DecPO: same units, the shared direction shrunk (FD up), wider margins, more offensive replies
    decpo = [fake_arm(s, shift=0.5, shared=0.2, offense=0.5, probed=0.35) for s in (0, 1)]
    rows = {r["key"]: r for r in evidence.compare(dpo, decpo, hooked=1, num_resamples=300)}
    assert rows["probe_k1_hooked"]["verdict"] == "higher" and rows["probe_k1_hooked"]["unit"] == "held-out statements"
    assert rows["fd_hooked"]["verdict"] == "higher" and not rows["fd_hooked"]["against_paper"]
    assert rows["reward_margin"]["difference"] == pytest.approx(1.0) and rows["reward_margin"]["verdict"] == "higher"
    assert rows["offensiveness"]["verdict"] == "higher" and rows["offensiveness"]["against_paper"]
    # FD rose because one shared direction shrank; the centred control sees (almost) the same rows
    assert abs(rows["control_hooked"]["difference"]) < rows["fd_hooked"]["difference"] / 5
    for key, row in rows.items():
        assert row["low"] <= row["difference"] <= row["high"], key
        seeds = [s["difference"] for s in row["per_seed"]]
        assert row["difference"] == pytest.approx(sum(seeds) / 2), key  # pooled = mean of per-seed differences
        assert row["a"] == pytest.approx(evidence.value(dpo, key, 1)) and row["b"] == pytest.approx(
            evidence.value(decpo, key, 1)
        )


def test_the_main_job_end_to_end_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    from research import demo

    model_dir = research_model_dir(tmp_path, monkeypatch)
    out = tmp_path / "demo"
    demo.main(
        [
            "--model-dir",
            model_dir,
            "--output-dir",
            str(out),
            "--steps",
            "3",
            "--curve-steps",
            "2",
            "--max-new-tokens",
            "4",
            "--num-resamples",
            "50",
            "--min-gap",
            "0.3",
            "--precision",
            "fp32",
        ]
    )
    results = json.load(open(out / "results.json"))
    # the next-step commands name what they need: `top-tokens` requires the layer, the hooked one
    top_tokens = [line for line in capsys.readouterr().out.splitlines() if "trl-decpo top-tokens" in line]
    assert len(top_tokens) == 1 and f"--layer {results['hooked_layer']} " in top_tokens[0]
    assert results["task"]["heldout_pairs"] == len(open(out / "heldout_prompts.jsonl").readlines())
    assert [r["seed"] for r in results["arms"]["dpo"]] == [0, 1] == [r["seed"] for r in results["arms"]["decpo"]]
    for arm in results["arms"]["dpo"] + results["arms"]["decpo"]:
        assert [c[0] for c in arm["curve"]] == [2, 3]
        # the curve's last point is the final held-out evaluation itself, not a second pass over the same pairs
        assert arm["curve"][-1][1:] == [arm["reward_margin"], arm["reward_accuracy"]]
        assert os.path.isfile(os.path.join(arm["adapter_dir"], "adapter_config.json"))
    for arm in results["arms"]["decpo"]:
        assert all(entry["penalty"] is not None for entry in arm["log"])
    report = open(out / "report.md").read()
    assert "What the intervals hold fixed: the trained models. They resample the held-out pairs" in report
    assert f"`python -m research.demo --model-dir {model_dir} --output-dir {out}" in report  # the command that ran
    for row in results["comparisons"]:
        assert row["label"] in report and row["verdict"] in ("higher", "lower", NO_DIFFERENCE)
    # the independent measure: k = 1 probing of the 200 statements (toxic vs benign) at the hooked layer, every model
    probe = next(row for row in results["comparisons"] if row["key"] == "probe_k1_hooked")
    hooked = str(results["hooked_layer"])
    per_seed = [arm["probing"][hooked]["accuracy"]["1"] for arm in results["arms"]["decpo"]]
    assert probe["b"] == pytest.approx(sum(per_seed) / len(per_seed))
    assert 0 <= results["base"]["probing"][hooked]["accuracy"]["dense"] <= 1
    for name in ("fd_differences_by_depth.png", "fd_by_depth.png", "heldout_margin_by_step.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the per-layer differences behind the bands: DPO - base and DecPO - DPO, each seed, every layer, FD and control
    differences = results["per_layer_differences"]
    pairs = {(r["against"], r["model"]) for r in differences}
    assert pairs == {("base", "dpo0"), ("base", "dpo1"), ("dpo0", "decpo0"), ("dpo1", "decpo1")}
    fd = {(r["model"], r["layer"]): r for r in differences if r["metric"] == "fd" and r["against"] == "base"}
    dpo0 = results["arms"]["dpo"][0]["per_layer"]["layers"]
    base_fd = results["base"]["per_layer"]["layers"]
    for layer in range(4):
        assert fd[("dpo0", layer)]["difference"] == pytest.approx(dpo0[layer]["fd"] - base_fd[layer]["fd"], abs=1e-9)
        assert fd[("dpo0", layer)]["low"] <= fd[("dpo0", layer)]["difference"] <= fd[("dpo0", layer)]["high"]
    # the adapters load on the base, and differ from it
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir), results["arms"]["dpo"][0]["adapter_dir"]
    )
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in tuned.named_parameters())


@pytest.mark.parametrize("native", [True, False])
def test_the_main_job_trains_in_bf16_only_where_the_cpu_runs_it(monkeypatch, capsys, native):
    import argparse

    from research import demo

    from trl_decpo import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    parser = demo.add_run_arguments(argparse.ArgumentParser(), "out")
    args = demo.parse_run_arguments(parser, [], "research.demo")
    assert args.bf16 is native
    line = [x for x in capsys.readouterr().out.splitlines() if "precision:" in x]
    assert len(line) == 1 and ("bf16 autocast" if native else "float32") in line[0]
    assert demo.parse_run_arguments(parser, ["--precision", "bf16"], "research.demo").bf16  # forced either way
    assert not demo.parse_run_arguments(parser, ["--precision", "fp32"], "research.demo").bf16


def test_shared_reference_logps_are_what_the_trainer_computes_and_are_read(tmp_path):
    """Pins TRL's precompute path that research.arms.SharedReference relies on: `_precompute_ref_logps` is where TRL
    computes them, and with `precompute_ref_log_probs=True` the loss reads the dataset's reference columns."""
    from types import SimpleNamespace

    from peft import LoraConfig
    from research.arms import SharedReference, with_reference_logps
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from trl_decpo.testing import tiny_preference_dataset

    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = tiny_preference_dataset(8)
    shared = with_reference_logps(
        AutoModelForCausalLM.from_pretrained(path), tokenizer, data, SimpleNamespace(eval_batch_size=3)
    )

    def first_loss(dataset, precompute: bool):
        config = DPOConfig(
            str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, logging_steps=1, report_to="none",
            save_strategy="no", use_cpu=True, bf16=False, activation_checkpointing=False,
            precompute_ref_log_probs=precompute, seed=0,
        )  # fmt: skip
        trainer = type("DPOTrainer", (SharedReference, DPOTrainer), {})(
            model=AutoModelForCausalLM.from_pretrained(path),
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
        trainer.train()
        return trainer.state.log_history[0]["loss"]

    computed = first_loss(data, precompute=False)  # the reference forward of every step
    assert first_loss(shared, precompute=True) == pytest.approx(computed, abs=1e-5)
    # the columns are read: a reference that favours every chosen reply moves the loss
    shifted = shared.map(lambda row: {"ref_chosen_logps": row["ref_chosen_logps"] + 5.0})
    assert abs(first_loss(shifted, precompute=True) - computed) > 0.1


def test_on_the_cpu_the_fused_lm_head_scores_only_completion_tokens_inside_the_block(tmp_path, monkeypatch):
    """Pins the TRL internal behind research.arms.completion_tokens_scored_on_cpu: `trl.trainer.utils` asks its
    module-level `_use_triton` whether to project only the labelled positions; inside the block it does so on the CPU,
    with the same loss."""
    import contextlib

    import trl.trainer.utils as trl_utils
    from research.arms import completion_tokens_scored_on_cpu
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from trl_decpo.testing import tiny_preference_dataset

    rows = []  # the rows the fused LM head projects, per call
    apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *rest):
        rows.append(len(hidden))
        return apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    path = model_path()

    def first_step(block):
        rows.clear()
        config = DPOConfig(
            str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, logging_steps=1, report_to="none",
            save_strategy="no", use_cpu=True, bf16=False, activation_checkpointing=False, seed=0,
        )  # fmt: skip
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path),
            args=config,
            train_dataset=tiny_preference_dataset(8),
            processing_class=AutoTokenizer.from_pretrained(path),
        )
        batch = next(iter(trainer.get_train_dataloader()))
        with block():
            trainer.train()
        # the labelled positions of the batch: every completion token, the first token excepted (shifted)
        labelled = int(batch["completion_mask"][:, 1:].sum())
        sequences, width = batch["input_ids"].shape
        return trainer.state.log_history[0]["loss"], rows[0], sequences * (width - 1), labelled

    loss, scored, positions, _ = first_step(contextlib.nullcontext)
    assert scored == positions  # TRL's default on the CPU: every (shifted) position, prompt and padding included
    fast_loss, fast_scored, _, labelled = first_step(completion_tokens_scored_on_cpu)
    assert fast_scored == labelled < scored
    assert fast_loss == pytest.approx(loss, abs=1e-5)
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after the block


def test_log_probs_in_chunks_with_progress_are_exactly_those_of_one_call(capsys):
    from types import SimpleNamespace

    from research.arms import logps_in_chunks
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_decpo import preference_logps
    from trl_decpo.testing import tiny_preference_dataset

    path = model_path()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    pairs = tiny_preference_dataset(11)
    whole = preference_logps(model, tokenizer, pairs, batch_size=2)
    chunked = logps_in_chunks(model, tokenizer, pairs, SimpleNamespace(eval_batch_size=2))
    assert torch.equal(chunked.chosen, whole.chosen) and torch.equal(chunked.rejected, whole.rejected)
    assert torch.equal(chunked.pair_index, whole.pair_index)
    progress = [line for line in capsys.readouterr().out.splitlines() if "pairs" in line]
    assert [line.split()[-2] for line in progress] == ["4/11", "8/11", "11/11"]  # a line per chunk of 2 batches
