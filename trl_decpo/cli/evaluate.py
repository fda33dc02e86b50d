# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo evaluate`: a BASE model and MODELS (checkpoints or PEFT adapters on BASE) on preference pairs and a task
score, with paired bootstrap differences (the paper's Table 2 for your data). Definitions: docs/evaluation.md."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from ..utils import check_choice, check_int
from .base import command_parser, run_command
from .data import DATASET_FORMATS, PREFERENCE_FILE_SUFFIXES, load_preference_dataset
from .loading import (
    LoadArguments,
    adapter_base,
    apply_adapter,
    check_models,
    is_adapter_folder,
    load_model,
    load_tokenizer,
)
from .output import prepare_output, unique_names


TRUNCATION_MODES = ("keep_start", "keep_end")


@dataclass
class EvaluateArguments:
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Preference pairs (prompt/chosen/rejected): a .json/.jsonl/.csv/.parquet/.arrow file or a dataset "
            "folder (saved with `save_to_disk`, or of data files). Gives reward accuracy and margin."
        },
    )
    dataset_format: str = field(
        default="preference",
        metadata={"help": "Column layout of `--dataset` (as `trl-decpo train`).", "choices": list(DATASET_FORMATS)},
    )
    split: str = field(default="test", metadata={"help": "Split of a dataset folder (a data file is one split)."})
    prompts: str | None = field(
        default=None,
        metadata={
            "help": "Prompts for the task score (as `trl-decpo measure --prompts`); default: the dataset's prompts."
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Field or column of `--prompts` holding them."})
    scorer: str | None = field(
        default=None,
        metadata={
            "help": "Task score of each completion: `module:function` (a callable on a list of strings returning "
            "floats, e.g. profanity_check:predict_prob) or a local text-classification model folder."
        },
    )
    scorer_label: str | None = field(
        default=None,
        metadata={
            "help": "Label of a classifier `--scorer` whose probability is the score (default: 'positive' or "
            "the last label)."
        },
    )
    beta: float = field(default=0.1, metadata={"help": "DPO's beta in the implicit reward beta * (logp - ref_logp)."})
    max_length: int = field(
        default=1024,
        metadata={"help": "Truncate each prompt+completion to this many tokens, as DPOConfig.max_length; 0 = never."},
    )
    truncation_mode: str = field(
        default="keep_start", metadata={"help": "As DPOConfig.truncation_mode.", "choices": list(TRUNCATION_MODES)}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens generated per prompt for the task score."})
    do_sample: bool = field(default=False, metadata={"help": "Sample completions (seeded by `--seed`); else greedy."})
    batch_size: int = field(default=8, metadata={"help": "Pairs, prompts or texts per forward pass."})
    max_pairs: int = field(default=0, metadata={"help": "Use the first this-many pairs; 0 = all."})
    max_prompts: int = field(default=0, metadata={"help": "Use the first this-many prompts; 0 = all."})
    num_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap (and of sampling)."})
    names: str | None = field(
        default=None, metadata={"help": "Comma-separated names of BASE and MODELS, e.g. base,dpo,decpo."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for results.json, results.md and completions.jsonl."}
    )

    def __post_init__(self):
        check_choice("truncation_mode", self.truncation_mode, TRUNCATION_MODES)
        for name in ("max_new_tokens", "batch_size", "num_resamples"):
            check_int(name, getattr(self, name))
        for name in ("max_length", "max_pairs", "max_prompts"):
            check_int(name, getattr(self, name), minimum=0)
        if not self.beta > 0:
            raise ValueError(f"`beta` must be > 0, got {self.beta}")
        if self.dataset is None and self.scorer is None:
            raise ValueError(
                "nothing to evaluate: pass --dataset (reward accuracy, margin) and/or --scorer (task score)"
            )
        if self.scorer is None and (self.prompts is not None or self.scorer_label is not None):
            raise ValueError("`--prompts` and `--scorer_label` are used with `--scorer` only: pass --scorer SPEC")
        if self.scorer is not None and self.dataset is None and self.prompts is None:
            raise ValueError("`--scorer` needs prompts: pass --prompts FILE or --dataset FILE_OR_DIR")


def model_names(models: list[str], names: str | None) -> list[str]:
    if names is None:
        return unique_names(models)
    out = [n.strip() for n in names.split(",")]
    if len(out) != len(models) or not all(out) or len(set(out)) != len(out):
        raise ValueError(
            f"`--names` must give {len(models)} distinct comma-separated names (BASE then each MODEL), got {names!r}"
        )
    return out


def load_pairs(args: EvaluateArguments):
    """The preference split of `--dataset`, checked before any model loads."""
    path = args.dataset
    if not os.path.exists(path):
        raise ValueError(
            f"`--dataset` {path!r} does not exist; give a {'/'.join(PREFERENCE_FILE_SUFFIXES)} file or a dataset folder"
        )
    if os.path.isfile(path) and os.path.splitext(path)[1].lower() not in PREFERENCE_FILE_SUFFIXES:
        raise ValueError(f"`--dataset` file {path!r} must end with one of {', '.join(PREFERENCE_FILE_SUFFIXES)}")
    loaded = load_preference_dataset(path, dataset_format=args.dataset_format)
    if os.path.isfile(path) or (args.split not in loaded and len(loaded) == 1 and not _is_dataset_dict(path)):
        pairs = next(iter(loaded.values()))  # a data file or a single saved dataset: one split
    elif args.split in loaded:
        pairs = loaded[args.split]
    else:
        raise ValueError(f"`--split` {args.split!r} is not a split of {path!r}; its splits are {list(loaded)}")
    if args.max_pairs:
        pairs = pairs.select(range(min(args.max_pairs, len(pairs))))
    if len(pairs) == 0:
        raise ValueError(f"`--dataset` {path!r} holds no pairs")
    return pairs


def _is_dataset_dict(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json"))


def load_task_prompts(args: EvaluateArguments, pairs) -> list:
    from ..monosemanticity.probes import load_prompts

    if args.prompts is not None:
        prompts = load_prompts(args.prompts, args.prompt_column, args.split, None)
    else:  # the dataset's prompts, each once
        seen, prompts = set(), []
        for prompt in pairs["prompt"]:
            key = json.dumps(prompt, sort_keys=True)
            if key not in seen:
                seen.add(key)
                prompts.append(prompt)
    return prompts[: args.max_prompts] if args.max_prompts else prompts


def evaluate_command(models: list[str], args: EvaluateArguments, load: LoadArguments) -> dict:
    """Metrics of BASE and each MODEL, and the comparison table; see docs/evaluation.md."""
    from ..evaluation import (
        comparison_table,
        dpo_pair_rewards,
        generate_completions,
        length_shortcut,
        load_scorer,
        preference_logps,
        tokenize_pairs,
    )

    if len(models) < 2:
        raise ValueError(
            "`evaluate` needs a BASE model and at least one MODEL (a checkpoint or a PEFT adapter folder)"
        )
    if load.base_model is not None:
        raise ValueError("`--base_model` is not used by `evaluate`: PEFT adapters among MODELS are applied to BASE")
    names = model_names(models, args.names)
    check_models(models, load, adapters_on_first=True)
    pairs = load_pairs(args) if args.dataset is not None else None
    prompts = load_task_prompts(args, pairs) if args.scorer is not None else None
    if prompts is not None and not prompts:
        raise ValueError("no prompts for the task score")
    device = load.resolved_device()
    scorer = None
    if args.scorer is not None:
        scorer = load_scorer(args.scorer, args.scorer_label, device, args.batch_size, load.trust_remote_code)
    tokenizer = load_tokenizer(models[0], load)
    tokenized = tokenize_pairs(tokenizer, pairs) if pairs is not None else None
    max_length = args.max_length or None
    logp_kwargs = dict(batch_size=args.batch_size, max_length=max_length, truncation_mode=args.truncation_mode)
    gen_kwargs = dict(
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, do_sample=args.do_sample, seed=args.seed
    )
    out_dir = prepare_output(args)

    def run(model, name) -> tuple:
        print(f"evaluating {name}", file=sys.stderr)
        logps = (
            preference_logps(model, tokenizer, pairs, tokenized=tokenized, **logp_kwargs)
            if pairs is not None
            else None
        )
        completions = scores = None
        if scorer is not None:
            completions = generate_completions(model, tokenizer, prompts, **gen_kwargs)
            scores = scorer(completions)
        return logps, completions, scores

    base_model = load_model(models[0], load)
    completions, scores, rewards = {}, {}, {}
    base_logps, completions[names[0]], scores[names[0]] = run(base_model, names[0])  # the reference
    for name, path in zip(names[1:], models[1:], strict=True):
        if is_adapter_folder(path):
            recorded = adapter_base(path)
            if recorded and os.path.realpath(recorded) != os.path.realpath(models[0]):
                print(
                    f"note: adapter {path} records base {recorded!r}; it is applied to BASE {models[0]!r}",
                    file=sys.stderr,
                )
            model = apply_adapter(base_model, path)
            model.eval()
        else:
            model = load_model(path, load)
        logps, completions[name], scores[name] = run(model, name)
        if logps is not None:
            rewards[name] = dpo_pair_rewards(logps, base_logps, args.beta)
        if is_adapter_folder(path):  # take the adapter off: BASE again for the next model
            base_model = model.unload() if hasattr(model.base_model, "unload") else model.get_base_model()
        del model

    shortcut = length_shortcut(tokenized, base_logps.pair_index.tolist()) if pairs is not None else None
    table = comparison_table(
        names,
        rewards=rewards if pairs is not None else None,
        scores=scores if scorer is not None else None,
        length_shortcut=shortcut,
        num_resamples=args.num_resamples,
        seed=args.seed,
    )
    if pairs is not None:
        dropped = len(pairs) - len(base_logps)
        table.notes.append(
            f"{len(base_logps)} pairs from {args.dataset}; reward = {args.beta} * (logp - logp under {names[0]})"
            + (f"; {dropped} pairs dropped (prompt fills --max_length {max_length}, as DPOTrainer)" if dropped else "")
        )
    if scorer is not None:
        how = "sampled" if args.do_sample else "greedy"
        table.notes.append(
            f"task score: {scorer.description}; {len(prompts)} prompts, {how} completions of {args.max_new_tokens} "
            "new tokens at most"
        )
    markdown = table.to_markdown()
    print(markdown)
    result = {
        "models": dict(zip(names, models, strict=True)),
        "settings": {k: v for k, v in vars(args).items() if k != "output_dir"},
        **table.to_dict(),
        "scorer": None
        if scorer is None
        else {"spec": scorer.spec, "label": scorer.label, "description": scorer.description},
        "units": {
            "pair_index": None if pairs is None else base_logps.pair_index.tolist(),
            "rewards": {n: {"chosen": r.chosen.tolist(), "rejected": r.rejected.tolist()} for n, r in rewards.items()},
            "task_scores": scores if scorer is not None else None,
        },
    }
    if out_dir:
        with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
            f.write(markdown + "\n")
        if scorer is not None:
            with open(os.path.join(out_dir, "completions.jsonl"), "w", encoding="utf-8") as f:
                for i, prompt in enumerate(prompts):
                    for name in names:
                        record = {"prompt": prompt, "model": name, "completion": completions[name][i]}
                        f.write(json.dumps({**record, "score": scores[name][i]}) + "\n")
        print(f"wrote {out_dir}")
    return result


def make_parser(prog: str | None = None):
    """The `evaluate` parser (`prog` names it in a script of one's own)."""
    parser = command_parser("evaluate", (EvaluateArguments, LoadArguments), prog)
    parser.add_argument(
        "models",
        nargs="+",
        metavar="BASE MODEL",
        help="Base model (the DPO reference), then checkpoints or PEFT adapter folders (applied to BASE).",
    )
    return parser


def main(parser, argv: list[str]) -> int:
    """Run `trl-decpo evaluate` with the options after `evaluate`."""
    return run_command(
        "evaluate", parser, argv, lambda positional, *parsed: evaluate_command(positional.models, *parsed)
    )
