# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Trained models against their base in one call (``trl-decpo evaluate``): DPO implicit rewards on preference pairs,
with the base as the reference, and a task score of each model's completions; the comparison table with paired
bootstrap intervals (:mod:`.report`). Definitions: docs/evaluation.md.

    from trl_decpo.evaluation import evaluate_models

    result = evaluate_models("base-model", {"dpo": "out/dpo", "decpo": "out/decpo-adapter"}, pairs,
                             scorer="profanity_check:predict_prob")
    print(result.to_markdown())
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn
from transformers.utils import logging

from ..monosemanticity.loading import (
    apply_adapter,
    is_adapter_folder,
    load_model_and_adapter,
    name_models,
    note_other_base,
    remove_adapter,
    resolve_device,
    source_name,
    tokenizer_for,
)
from ..sources import check_models
from .generation import generate_completions
from .preference import PairLogps, PairRewards, dpo_pair_rewards, length_shortcut, preference_logps, tokenize_pairs
from .report import EvaluationTable, comparison_table
from .scoring import load_scorer


logger = logging.get_logger(__name__)


@dataclass
class ModelEvaluation:
    """One model on the pairs and prompts: its log-probabilities and DPO implicit rewards (against the reference) per
    pair, and its completion and score per prompt (``None`` for what was not asked)."""

    logps: PairLogps | None = None
    rewards: PairRewards | None = None
    completions: list[str] | None = None
    scores: list[float] | None = None


def distinct_prompts(pairs) -> list:
    """The prompts of preference pairs, each once, in order."""
    seen, prompts = set(), []
    for prompt in pairs["prompt"]:
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    return prompts


def evaluate_model(
    model: nn.Module,
    tokenizer,
    pairs=None,
    prompts: Sequence | None = None,
    scorer: Callable | str | None = None,
    reference: PairLogps | None = None,
    *,
    beta: float = 0.1,
    batch_size: int = 8,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    tokenized: Sequence[dict] | None = None,
    generation_kwargs: dict | None = None,
) -> ModelEvaluation:
    """``model`` on ``pairs`` (:func:`preference_logps`; rewards ``beta * (logp - ref_logp)`` against ``reference``,
    the reference model's log-probabilities; ``None``: the model is its own reference, every reward 0) and on
    ``prompts`` (:func:`generate_completions` with ``generation_kwargs``, default ``batch_size`` and greedy; each
    completion scored by ``scorer``, a callable on a list of texts or a :func:`load_scorer` spec)."""
    out = ModelEvaluation()
    if pairs is not None:
        kwargs = dict(batch_size=batch_size, max_length=max_length, truncation_mode=truncation_mode)
        out.logps = preference_logps(model, tokenizer, pairs, tokenized=tokenized, **kwargs)
        out.rewards = dpo_pair_rewards(out.logps, reference if reference is not None else out.logps, beta)
    if scorer is not None:
        if prompts is None:
            raise ValueError("a task score needs `prompts`")
        scorer = load_scorer(scorer) if isinstance(scorer, str) else scorer
        out.completions = generate_completions(
            model, tokenizer, prompts, **{"batch_size": batch_size, **(generation_kwargs or {})}
        )
        out.scores = [float(s) for s in scorer(out.completions)]
    return out


@dataclass
class EvaluationResult:
    """:func:`evaluate_models`' result: the comparison table and what each model did on the shared units."""

    table: EvaluationTable
    evaluations: dict[str, ModelEvaluation]
    prompts: list | None = None
    scorer: dict | None = None  # spec, label and description of the task scorer
    sources: dict[str, str | None] = field(default_factory=dict)

    def to_markdown(self) -> str:
        return self.table.to_markdown()

    def to_dict(self) -> dict:
        """``results.json``: the sources, the table, the scorer and the per-unit data (each pair's rewards, each
        prompt's score)."""
        first = next(iter(self.evaluations.values()))
        later = {
            name: e for name, e in self.evaluations.items() if e.rewards is not None and name != self.table.names[0]
        }
        return {
            "models": {name: self.sources.get(name) for name in self.evaluations},
            **self.table.to_dict(),
            "scorer": self.scorer,
            "units": {
                "pair_index": None if first.logps is None else first.logps.pair_index.tolist(),
                "rewards": {
                    n: {"chosen": e.rewards.chosen.tolist(), "rejected": e.rewards.rejected.tolist()}
                    for n, e in later.items()
                },
                "task_scores": None if first.scores is None else {n: e.scores for n, e in self.evaluations.items()},
            },
        }

    def completion_records(self) -> list[dict]:
        """``{"prompt", "model", "completion", "score"}`` of every prompt and model (``completions.jsonl``)."""
        if self.prompts is None:
            return []
        return [
            {"prompt": prompt, "model": name, "completion": e.completions[i], "score": e.scores[i]}
            for i, prompt in enumerate(self.prompts)
            for name, e in self.evaluations.items()
        ]

    def save(self, output_dir: str, settings: dict | None = None) -> list[str]:
        """Write ``results.json`` (with ``settings``, if given), ``results.md`` and, with a task score,
        ``completions.jsonl`` into ``output_dir``; returns the paths written."""
        os.makedirs(output_dir, exist_ok=True)
        result = self.to_dict()
        result = {"models": result.pop("models"), **({"settings": settings} if settings is not None else {}), **result}
        paths = [os.path.join(output_dir, name) for name in ("results.json", "results.md", "completions.jsonl")]
        with open(paths[0], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        with open(paths[1], "w", encoding="utf-8") as f:
            f.write(self.to_markdown() + "\n")
        if self.prompts is None:
            return paths[:2]
        with open(paths[2], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in self.completion_records())
        return paths


def evaluate_models(
    base: str | nn.Module,
    models: Mapping[str, str | nn.Module] | Sequence[str | nn.Module],
    pairs=None,
    prompts: Sequence | None = None,
    scorer: Callable | str | None = None,
    tokenizer=None,
    *,
    base_name: str | None = None,
    pairs_name: str | None = None,
    beta: float = 0.1,
    batch_size: int = 8,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    generation_kwargs: dict | None = None,
    max_prompts: int | None = None,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    model_args=None,
    device: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Reward accuracy and margin of each of ``models`` on ``pairs`` (DPO implicit rewards, ``base`` the reference),
    the task score of every model's completions of ``prompts`` (default: the distinct prompts of ``pairs``), and
    each model against the base and against the first model, with paired bootstrap intervals (:func:`comparison_table`).

    Args:
        base: the base model (every model's DPO reference), loaded or as a model folder / Hub id.
        models: a mapping from names to models, or a list (named after their folders): loaded models, model folders,
            Hub ids, or PEFT adapter folders, applied to ``base`` for their turn and taken off again.
        pairs: preference pairs (a ``datasets.Dataset``, a dict of columns or a list of dicts), tokenized once as
            ``DPOTrainer`` does (:func:`tokenize_pairs`) with ``tokenizer`` (a tokenizer, or a folder or Hub id to load it
            from; default: ``base``'s, when it is a path).
        scorer: a callable on a list of texts returning one float each, or a :func:`load_scorer` spec.
        max_prompts: score the first this-many prompts only.
        pairs_name: how the table's notes name the pairs (e.g. their file).
        generation_kwargs: for :func:`generate_completions` (default: greedy, ``batch_size`` prompts per call).
        model_args, device, trust_remote_code: how models given as paths load (:func:`load_model_and_adapter`).
        progress: say which model is evaluated (a warning-level log line each), else at info level.
    """
    say = logger.warning if progress else logger.info
    if pairs is None and scorer is None:
        raise ValueError("nothing to evaluate: give `pairs` (reward accuracy, margin) and/or a `scorer` (task score)")
    if not beta > 0:
        raise ValueError(f"`beta` must be > 0, got {beta}")
    base_name, named = name_models(base, models, base_name)
    if scorer is not None:
        prompts = list(prompts) if prompts is not None else distinct_prompts(pairs) if pairs is not None else []
        prompts = prompts[:max_prompts] if max_prompts else prompts
        if not prompts:
            raise ValueError("no prompts for the task score: give `prompts` or `pairs`")
    check_models([base, *named.values()], getattr(model_args, "model_revision", None))  # before any loads
    if isinstance(scorer, str):
        scorer = load_scorer(scorer, device=resolve_device(device), batch_size=batch_size)
    tokenizer = tokenizer_for(tokenizer, base, trust_remote_code)
    tokenized = tokenize_pairs(tokenizer, pairs) if pairs is not None else None
    load = dict(model_args=model_args, device=device, trust_remote_code=trust_remote_code)
    evaluate = dict(
        pairs=pairs, prompts=prompts, scorer=scorer, beta=beta, batch_size=batch_size, max_length=max_length,
        truncation_mode=truncation_mode, tokenized=tokenized, generation_kwargs=generation_kwargs,
    )  # fmt: skip
    base_model = base if isinstance(base, nn.Module) else load_model_and_adapter(base, **load)
    say(f"evaluating {base_name}")
    evaluations = {base_name: evaluate_model(base_model, tokenizer, **evaluate)}
    sources = {base_name: source_name(base)}
    reference = evaluations[base_name].logps
    for name, entry in named.items():
        say(f"evaluating {name}")
        adapter = isinstance(entry, (str, os.PathLike)) and is_adapter_folder(entry)
        if adapter:  # on BASE for its turn
            note_other_base(entry, base_model)
            model = apply_adapter(base_model, entry)
        else:
            model = entry if isinstance(entry, nn.Module) else load_model_and_adapter(entry, **load)
        evaluations[name] = evaluate_model(model, tokenizer, reference=reference, **evaluate)
        sources[name] = source_name(entry)
        if adapter:  # take the adapter off: BASE again for the next model
            base_model = remove_adapter(model)
        del model

    base_eval = evaluations[base_name]
    table = comparison_table(
        [base_name, *named],
        rewards={name: evaluations[name].rewards for name in named} if pairs is not None else None,
        scores={name: e.scores for name, e in evaluations.items()} if scorer is not None else None,
        length_shortcut=length_shortcut(tokenized, base_eval.logps.pair_index.tolist()) if pairs is not None else None,
        num_resamples=num_resamples,
        confidence=confidence,
        seed=seed,
    )
    if pairs is not None:
        dropped = len(tokenized) - len(base_eval.logps)
        table.notes.append(
            f"{len(base_eval.logps)} pairs{f' from {pairs_name}' if pairs_name else ''}; reward = {beta} * (logp - "
            f"logp under {base_name})"
            + (f"; {dropped} pairs dropped (prompt fills `max_length` {max_length}, as DPOTrainer)" if dropped else "")
        )
    described = None
    if scorer is not None:
        gen = {"max_new_tokens": 32, "do_sample": False, **(generation_kwargs or {})}
        what = getattr(scorer, "description", None) or getattr(scorer, "__name__", type(scorer).__name__)
        how = "sampled" if gen["do_sample"] else "greedy"
        table.notes.append(
            f"task score: {what}; {len(prompts)} prompts, {how} completions of {gen['max_new_tokens']} new tokens at most"
        )
        described = {key: getattr(scorer, key, None) for key in ("spec", "label")} | {"description": what}
    return EvaluationResult(table, evaluations, prompts if scorer is not None else None, described, sources)
