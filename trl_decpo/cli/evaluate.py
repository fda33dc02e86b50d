# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl-decpo evaluate`: a BASE model and MODELS (checkpoints or PEFT adapters on BASE) on preference pairs and a task
score, with paired bootstrap differences (:func:`~trl_decpo.evaluation.evaluate_models`; docs/evaluation.md)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import DATASET_FORMATS, load_pairs
from ..utils import check_int
from .base import command, option
from .loading import LoadArguments


@dataclass
class EvaluateArguments:
    dataset: str | None = option(
        None,
        "Preference pairs (prompt/chosen/rejected) for reward accuracy and margin: a .json/.jsonl/.csv/.parquet/"
        ".arrow file or a dataset folder (saved with `save_to_disk`, or of data files).",
    )
    dataset_format: str = option(
        "preference", "Column layout of `--dataset` (as in `trl-decpo dpo`).", choices=list(DATASET_FORMATS)
    )
    split: str = option("test", "Split of a dataset folder (a data file is one split).")
    prompts: str | None = option(None, "Prompts for the task score (as `measure --prompts`); default: the dataset's.")
    prompt_column: str = option("prompt", "Field or column of `--prompts` holding them.")
    scorer: str | None = option(
        None,
        "Task score of each completion: `module:function` (a callable on a list of strings returning floats, e.g. "
        "profanity_check:predict_prob) or a local text-classification model folder.",
    )
    scorer_label: str | None = option(
        None, "Label of a classifier `--scorer` whose probability is the score (default: 'positive' or the last)."
    )
    beta: float = option(0.1, "DPO's beta in the implicit reward beta * (logp - ref_logp).")
    max_length: int = option(1024, "Truncate prompt+completion to this many tokens (DPOConfig.max_length); 0 = never.")
    truncation_mode: str = option("keep_start", "As DPOConfig.truncation_mode.", choices=["keep_start", "keep_end"])
    max_new_tokens: int = option(32, "Tokens generated per prompt for the task score.")
    do_sample: bool = option(False, "Sample completions (seeded by `--seed`); else greedy.")
    batch_size: int = option(8, "Pairs, prompts or texts per forward pass.")
    max_pairs: int = option(0, "Use the first this-many pairs; 0 = all.")
    max_prompts: int = option(0, "Use the first this-many prompts; 0 = all.")
    num_resamples: int = option(2000, "Bootstrap resamples.")
    seed: int = option(0, "Seed of the bootstrap (and of sampling).")
    names: str | None = option(None, "Comma-separated names of BASE and MODELS, e.g. base,dpo,decpo.")
    output_dir: str | None = option(None, "Folder for results.json, results.md and completions.jsonl.")

    def __post_init__(self):
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


def evaluate_command(models: list[str], args: EvaluateArguments, load: LoadArguments) -> dict:
    from ..evaluation import evaluate_models, load_scorer
    from ..monosemanticity import load_prompts
    from ..monosemanticity.loading import name_models, resolve_device
    from ..sources import check_models

    if len(models) < 2:
        raise ValueError(
            "`evaluate` needs a BASE model and at least one MODEL (a checkpoint or a PEFT adapter folder)"
        )
    if load.base_model is not None:
        raise ValueError("`--base_model` is not used by `evaluate`: PEFT adapters among MODELS are applied to BASE")
    base_name, named = name_models(models[0], models[1:])  # default: the folder names
    names = [n.strip() for n in args.names.split(",")] if args.names else [base_name, *named]
    if len(names) != len(models) or not all(names) or len(set(names)) != len(names):
        raise ValueError(
            f"`--names` must give {len(models)} distinct comma-separated names (BASE then each MODEL), got {args.names!r}"
        )
    check_models(models, load.model_revision)
    pairs = None
    if args.dataset is not None:
        pairs = load_pairs(args.dataset, args.split, args.dataset_format, args.max_pairs, "--")
    prompts = load_prompts(args.prompts, args.prompt_column, args.split) if args.prompts is not None else None
    device, remote = resolve_device(load.device), load.trust_remote_code
    scorer = load_scorer(args.scorer, args.scorer_label, device, args.batch_size, remote) if args.scorer else None
    result = evaluate_models(
        models[0], dict(zip(names[1:], models[1:], strict=True)), pairs, prompts, scorer,
        base_name=names[0], pairs_name=args.dataset, beta=args.beta, batch_size=args.batch_size,
        max_length=args.max_length or None, truncation_mode=args.truncation_mode, max_prompts=args.max_prompts or None,
        generation_kwargs=dict(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, seed=args.seed),
        num_resamples=args.num_resamples, seed=args.seed, progress=True, **load.loading(),
    )  # fmt: skip
    print(result.to_markdown())
    if args.output_dir:
        result.save(args.output_dir, settings={k: v for k, v in vars(args).items() if k != "output_dir"})
        print(f"wrote {args.output_dir}")
    return result.to_dict()


make_parser, main = command(
    "evaluate", (EvaluateArguments, LoadArguments), evaluate_command, "models", nargs="+", metavar="BASE MODEL",
    help="Base model (the DPO reference), then checkpoints or PEFT adapter folders (applied to BASE).",
)  # fmt: skip
