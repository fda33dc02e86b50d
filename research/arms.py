# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Train and measure one arm of the main job (base, DPO or DecPO), the same way for every arm.

Each arm is measured on the held-out split with the library's own tools:

* `trl_decpo.evaluate_model`: per-pair DPO implicit rewards against the base model (accuracy, margin), and the task score (the
  offline scorer) of greedy replies to the held-out prompts;
* `measure_monosemanticity`: FD, its control and sparsity per layer on the held-out prompts (chat-formatted, pooled
  at their last content token), rows kept for the paired bootstrap.

    from research.arms import evaluate_model, train_arm
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from research.task import Task, score_texts


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine(threads: int = 0) -> str:
    """The CPU a timing was measured on, for the reports: its model name, whether it runs bf16 natively, threads."""
    import platform

    import torch

    from trl_decpo.precision import cpu_has_native_bf16

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}, {bf16}), {threads or torch.get_num_threads()} threads"


@dataclass
class ArmResult:
    name: str
    seed: int | None
    rewards: object = None  # trl_decpo.evaluation.PairRewards (per held-out pair)
    report: object = None  # trl_decpo.MonosemanticityReport (rows kept)
    probing: dict = field(
        default_factory=dict
    )  # layer -> trl_decpo.sparse_probing result (toxic vs benign statements)
    completions: list = field(default_factory=list)
    scores: list = field(default_factory=list)  # offensiveness of each greedy reply
    curve: list = field(default_factory=list)  # (step, held-out margin, held-out accuracy)
    log: list = field(default_factory=list)  # per-step training logs
    train_seconds: float = 0.0
    adapter_dir: str | None = None
    steps: int | None = None  # optimizer steps trained (None: the base model)


@contextmanager
def float32_forward(model):
    """``model`` evaluated in float32, as the base model is, even right after a bf16 run.

    accelerate wraps the forward of a model it prepares for bf16 mixed precision in bf16 autocast, and the wrapper
    stays on the trainer's model after training; it keeps the original forward as ``_original_forward`` (pinned by
    tests/research). Inside this block the model runs that original forward."""
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield model
        return
    wrapped = model.__dict__["forward"]
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def evaluate_model(model, tokenizer, task: Task, args, ref_logps, result: ArmResult) -> tuple[ArmResult, object]:
    """Fill ``result`` with the held-out rewards (against ``ref_logps``; ``None``: against the model itself, all 0),
    the measurement and the task score, in float32 (:func:`float32_forward`). Returns ``result`` and the model's
    held-out log-probs (the base model's are the reference of every other arm)."""
    with float32_forward(model):
        return _evaluate(model, tokenizer, task, args, ref_logps, result)


@contextmanager
def phase(label: str):
    """One line when a phase of the job starts and one when it ends, with its seconds: the job is never silent for
    long, even on a slow or loaded machine."""
    say(f"{label} ...")
    start = time.perf_counter()
    yield
    say(f"{label}: {time.perf_counter() - start:.0f} s")


def _evaluate(model, tokenizer, task: Task, args, ref_logps, result: ArmResult) -> tuple[ArmResult, object]:
    import trl_decpo  # its evaluate_model, not this module's
    from trl_decpo import measure_monosemanticity

    n_pairs, n_prompts = len(task.heldout), len(task.heldout_chats)
    with phase(f"  {result.name}: log-probs of the {n_pairs} held-out pairs"):
        rewarded = trl_decpo.evaluate_model(
            model, tokenizer, task.heldout, reference=ref_logps, beta=args.beta, batch_size=args.eval_batch_size
        )
    result.rewards = rewarded.rewards
    if result.steps:  # the last point of the held-out curve is this evaluation (HeldoutCurve skips it)
        result.curve.append((result.steps, result.rewards.margin, result.rewards.accuracy))
    with phase(f"  {result.name}: FD, control and sparsity of every layer on the {n_prompts} held-out prompts"):
        result.report = measure_monosemanticity(model, task.heldout_chats, tokenizer, batch_size=args.eval_batch_size)
    with phase(f"  {result.name}: k-sparse probing of the {len(task.statements)} statements, toxic vs benign"):
        result.probing = probe_statements(model, tokenizer, task, args)
    with phase(f"  {result.name}: greedy replies ({args.max_new_tokens} tokens) to the {n_prompts} prompts, scored"):
        replies = {"max_new_tokens": args.max_new_tokens, "batch_size": n_prompts}  # all prompts in one batch
        scored = trl_decpo.evaluate_model(
            model, tokenizer, prompts=task.heldout_chats, scorer=score_texts, generation_kwargs=replies
        )
    result.completions, result.scores = scored.completions, scored.scores
    return result, rewarded.logps


def probe_statements(model, tokenizer, task: Task, args) -> dict:
    """``{layer: sparse_probing result}`` at ``args.probe_layers`` (default: the layer DecPO hooks by default, nearest
    ``num_layers // 3``): the best single neuron and the dense probe separating toxic from benign statements, an
    instrument the penalty does not train."""
    from trl_decpo import measure_monosemanticity, sparse_probing
    from trl_decpo.capture.sites import default_sites, nearest_layer, num_decoder_layers

    layers = getattr(args, "probe_layers", None) or [nearest_layer(default_sites(model), num_decoder_layers(model))]
    rows = measure_monosemanticity(model, task.statements, tokenizer, layers=layers, batch_size=args.eval_batch_size)
    return {layer: sparse_probing(rows.rows(layer), task.statement_labels, ks=(1,)) for layer in layers}


def logps_in_chunks(model, tokenizer, pairs, args, max_length: int | None = None):
    """``trl_decpo.preference_logps`` of ``pairs``, a chunk of ``2 x --eval-batch-size`` pairs at a time with a progress
    line after each (the same batches, so the same numbers, as in one call): never silent for long."""
    import torch

    from trl_decpo.evaluation import PairLogps, preference_logps

    chosen, rejected, index, chunk = [], [], [], 2 * args.eval_batch_size
    for start in range(0, len(pairs), chunk):
        part = pairs.select(range(start, min(start + chunk, len(pairs))))
        logps = preference_logps(model, tokenizer, part, batch_size=args.eval_batch_size, max_length=max_length)
        chosen.append(logps.chosen)
        rejected.append(logps.rejected)
        index.append(logps.pair_index + start)
        if len(pairs) > chunk:
            say(f"    {start + len(part)}/{len(pairs)} pairs")
    return PairLogps(torch.cat(chosen), torch.cat(rejected), torch.cat(index))


def with_reference_logps(model, tokenizer, dataset, args):
    """``dataset`` (training pairs) with the columns ``ref_chosen_logps`` / ``ref_rejected_logps``: ``model``'s (the
    base model's, in float32) log-probs of each completion, computed once for every arm.

    Every arm's DPO reference is the base model on the same pairs, so these are the numbers each trainer would
    otherwise compute itself, in an extra forward of every step (the adapter disabled) or in its
    ``precompute_ref_log_probs`` pass; computing them once saves that forward in every step. The trainers read them
    through :class:`SharedReference` with ``precompute_ref_log_probs=True`` (TRL's collator passes the columns on)."""
    logps = logps_in_chunks(model, tokenizer, dataset, args, max_length=MAX_LENGTH)
    if logps.pair_index.tolist() != list(range(len(dataset))):
        raise ValueError("a training pair fills `max_length`: its reference log-probs cannot be shared")
    return dataset.add_column("ref_chosen_logps", logps.chosen.float().tolist()).add_column(
        "ref_rejected_logps", logps.rejected.float().tolist()
    )


class SharedReference:
    """A mixin for ``DPOTrainer`` and ``DecPOTrainer``: with ``precompute_ref_log_probs=True``, a training set that
    already has the reference columns (:func:`with_reference_logps`) is used as it is, instead of TRL computing them
    again. Overrides TRL's private ``_precompute_ref_logps`` (pinned by tests/research/test_main_job.py)."""

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if {"ref_chosen_logps", "ref_rejected_logps"} <= set(dataset.column_names):
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)


class HeldoutCurve(TrainerCallback):
    """Held-out margin and accuracy every ``every`` steps (the paper's margin-over-training view), one line per step
    with the DPO loss and the penalty apart."""

    def __init__(self, trainer, task: Task, ref_logps, args, result: ArmResult, label: str):
        self.trainer, self.task, self.ref_logps, self.args = trainer, task, ref_logps, args
        self.result, self.label = result, label

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        penalty = logs.get("decorrelation/penalty")
        coef = getattr(args, "decorrelation_coef", 0.0)
        dpo_loss = logs["loss"] - coef * penalty if penalty is not None else logs["loss"]
        self.result.log.append({"step": state.global_step, "dpo_loss": dpo_loss, "penalty": penalty, **logs})
        extra = f", penalty {penalty:.4f} (x{coef:g})" if penalty is not None else ""
        say(f"{self.label} step {state.global_step}/{state.max_steps}: DPO loss {dpo_loss:.4f}{extra}")

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step % self.args.curve_steps or step == state.max_steps:  # the last point: `evaluate_model` after training
            return
        from trl_decpo import dpo_pair_rewards

        say(f"{self.label} step {step}: the held-out margin curve")
        with float32_forward(self.trainer.model) as model:  # as the base model's reference log-probs
            logps = logps_in_chunks(model, self.trainer.processing_class, self.task.heldout, self.args)
        rewards = dpo_pair_rewards(logps, self.ref_logps, self.args.beta)
        self.result.curve.append((step, rewards.margin, rewards.accuracy))


@contextmanager
def completion_tokens_scored_on_cpu():
    """Inside the block, TRL's fused LM head scores only the completion tokens on the CPU, as it does on a GPU.

    ``DPOTrainer`` replaces the LM head with a chunked log-prob kernel that, on Triton devices (CUDA, XPU), projects
    only the positions with a label; elsewhere it projects every position, prompt included, so that compilers that
    specialise on shapes (Neuron) see fixed tiles. On a CPU nothing is compiled, and the prompt positions cost about a
    third of a DPO step of this job for log-probs that are then masked out. The log-probs are the same either way
    (the first loss agrees to 1e-5: tests/research/test_main_job.py, which also pins the TRL internal this relies on:
    the module-level ``_use_triton`` that ``trl.trainer.utils`` asks). Both arms train inside it."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


MAX_LENGTH = 256  # tokens of prompt + reply; the longest pair has far fewer


def lora_targets(value: str):
    return value if value == "all-linear" else value.split(",")


def train_arm(
    kind: str,
    seed: int,
    model_dir: str,
    task: Task,
    ref_logps,
    args,
    coef: float | None = None,
    layers: list[int] | None = None,
) -> tuple[object, ArmResult]:
    """``kind`` "dpo" (plain ``trl.DPOTrainer``) or "decpo" (``DecPOTrainer``, library defaults unless ``coef`` or
    ``layers`` are given). Same LoRA, seed, data order and budget for every arm."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    from trl_decpo import DecPOConfig, DecPOTrainer
    from trl_decpo.compat import quiet_deprecated_checkpointing_calls

    name = kind + (f"_coef{coef:g}" if coef is not None else "") + (f"_layer{layers[0]}" if layers else "")
    out = os.path.join(args.output_dir, f"{name}_seed{seed}")
    set_seed(seed)
    common = dict(
        output_dir=out,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=args.beta,
        max_length=MAX_LENGTH,
        seed=seed,
        data_seed=seed,
        bf16=args.bf16,
        use_cpu=True,
        activation_checkpointing=False,  # a 135M model needs no memory saving; checkpointing recomputes forwards
        precompute_ref_log_probs="ref_chosen_logps" in task.train.column_names,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if kind == "dpo":
        config, trainer_class = DPOConfig(**common), type("DPOTrainer", (SharedReference, DPOTrainer), {})
    else:
        extra = {} if coef is None else {"decorrelation_coef": coef}
        if layers is not None:
            extra["decorrelation_layers"] = layers
        config = DecPOConfig(**common, **extra)
        trainer_class = type("DecPOTrainer", (SharedReference, DecPOTrainer), {})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with (
        phase(f"  {name} seed {seed}: loading the model, adding LoRA, tokenizing the {len(task.train)} pairs"),
        quiet_deprecated_checkpointing_calls(),
    ):
        trainer = trainer_class(
            model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
            args=config,
            train_dataset=task.train,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=8, lora_alpha=16, target_modules=lora_targets(args.lora_targets), task_type="CAUSAL_LM"
            ),
        )
    result = ArmResult(name=name, seed=seed, steps=args.steps)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(HeldoutCurve(trainer, task, ref_logps, args, result, f"{name.upper()} seed {seed}"))
    start = time.perf_counter()
    # quiet: as DecPOTrainer is (plain TRL and PEFT warn about their own calls)
    with quiet_deprecated_checkpointing_calls(), completion_tokens_scored_on_cpu():
        trainer.train()
    result.train_seconds = time.perf_counter() - start
    if args.save_adapters:
        trainer.save_model(out)  # the LoRA adapter and the tokenizer: `trl-decpo compare/measure/evaluate` read it
        result.adapter_dir = out
    return trainer, result
