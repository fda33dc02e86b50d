# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""``trl-decpo train``: ``trl dpo`` with the DecPO penalty and the monosemanticity callback; with ``--trainer
sft|kto|reward``, ``trl sft`` / ``trl kto`` / ``trl reward`` with the same penalty (the decorrelated trainers of
:mod:`trl_decpo.trainers`).

Same arguments as the TRL script (``ScriptArguments``, every field of its config, ``ModelConfig`` with its PEFT/LoRA and
4-bit options, a YAML file through ``--config``), parsed with ``TrlParser``, plus the ``decorrelation_*`` fields and the
options below. The trainer is chosen before the parser is built (``--trainer`` on the command line, else ``trainer:`` in
the ``--config`` file, else ``dpo``), so ``--help`` shows its options. Loads the model and data (a preference dataset is
mapped to what the trainer takes: :func:`~.data.to_trainer_format`), attaches ``MonosemanticityCallback``, trains, saves
(model card with the decorrelation settings, naming the trainer, and the last measurements) and, with
``--push_to_hub``, pushes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields

from transformers import TrainerCallback
from trl import ModelConfig, ScriptArguments

from ..monosemanticity.probes import POOLING_CHOICES, first_occurrences
from ..trainer import DecPOConfig
from ..trainer.compat import ignore_bool_buffers_in_ddp
from ..utils import check_choice, check_int, check_layers
from .base import command_parser
from .data import DATASET_FORMATS, TRAINERS, column_names, load_preference_dataset, pairs_to_trainer
from .notices import release_bitsandbytes_notice
from .output_dir import prepare_output_dir, removed_if_left_empty
from .sources import check_dataset_source, check_model_source
from .train_parser import TrainParser, own_fields
from .trainer_choice import (
    DATA_HELP,
    DESCRIPTIONS,
    TRAINER_CLASSES,
    choose_trainer,
    next_steps,
)


@dataclass
class DecPOScriptArguments(ScriptArguments):
    """``trl``'s script arguments (``dataset_name``, ``dataset_config``, splits, ...) plus the trainer, data formats and
    probes."""

    trainer: str = field(
        default="dpo",
        metadata={
            "help": "The TRL trainer the penalty is added to, and whose options this command takes (`trl-decpo train "
            "--trainer sft --help` lists them): 'dpo' (DecPOTrainer); 'sft' (SFT on the preferred completions of a "
            "preference dataset, prompt + chosen, the usual stage before DPO; or a 'text', 'messages' or "
            "'prompt'/'completion' dataset); 'kto' (each pair unpaired into a desirable chosen row and an undesirable "
            "rejected row; or a 'prompt'/'completion'/'label' dataset); 'reward' (a reward model, "
            "AutoModelForSequenceClassification with one label, on the pairs). Give it on the command line or as "
            "`trainer:` in the --config file.",
            "choices": list(TRAINERS),
        },
    )
    dataset_format: str = field(
        default="preference",
        metadata={
            "help": "How rows map to prompt/chosen/rejected: a TRL preference dataset, or the format of one of "
            "the paper's tasks.",
            "choices": list(DATASET_FORMATS),
        },
    )
    dataset_test_size: float = field(
        default=0.0,
        metadata={
            "help": "When the dataset has no `dataset_test_split`, hold out this fraction of the train split "
            "(evaluation and monosemanticity probes); 0 = none."
        },
    )
    monosemanticity: bool = field(
        default=True,
        metadata={
            "help": "Measure FD and sparsity per layer with MonosemanticityCallback, on the prompts of the test split "
            "or on `monosemanticity_probes`; with neither, the run trains without it and says so in one line."
        },
    )
    monosemanticity_probes: str | None = field(
        default=None,
        metadata={
            "help": "Probe prompts file or dataset (see `trl-decpo measure --help`); default: the prompts of "
            "the test split."
        },
    )
    monosemanticity_layers: list[int] | None = field(
        default=None, metadata={"help": "Layers the callback measures (default: all)."}
    )
    monosemanticity_max_samples: int = field(default=1000, metadata={"help": "At most this many probe prompts."})
    monosemanticity_pooling: str = field(
        default="auto",
        metadata={
            "help": "Which probe tokens the callback measures: 'last', 'mean', 'last_content' (the last token before "
            "the chat template's constant suffix) or 'auto' (last_content for chat probes, last otherwise).",
            "choices": list(POOLING_CHOICES),
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in an `output_dir` that is not empty: everything in it is deleted first "
            "(refused if the model, data or probes of this run lie inside). Without it such a folder is "
            "refused, unless `--resume_from_checkpoint` continues the run there."
        },
    )

    def __post_init__(self):
        check_choice("trainer", self.trainer, TRAINERS)
        check_choice("dataset_format", self.dataset_format, DATASET_FORMATS)
        if not 0.0 <= self.dataset_test_size < 1.0:
            raise ValueError(f"`dataset_test_size` must be in [0, 1), got {self.dataset_test_size}")
        check_int("monosemanticity_max_samples", self.monosemanticity_max_samples, 2)
        check_choice("monosemanticity_pooling", self.monosemanticity_pooling, POOLING_CHOICES)
        # YAML values skip argparse's type conversion
        self.monosemanticity_layers = check_layers("monosemanticity_layers", self.monosemanticity_layers)


def make_parser(prog: str | None = None, trainer: str = "dpo") -> TrainParser:
    """The `train` parser of `trainer` (its config: :data:`TRAINER_CLASSES`), as TRL's scripts build theirs (`prog`
    names it in a script of one's own): short `--help`, full `--help-all`, mixed precision off without a GPU
    (:mod:`.train_parser`)."""
    check_choice("trainer", trainer, TRAINERS)
    config, trl_config, trainer_class = TRAINER_CLASSES[trainer]
    parser = command_parser(
        "train",
        (DecPOScriptArguments, config, ModelConfig),
        prog,
        TrainParser,
        decpo_fields=own_fields(config, trl_config),
        data_fields=[f.name for f in fields(DecPOScriptArguments)],
        trainer=trainer,
        config_name=config.__name__,
        trl_config_name=trl_config.__name__,
    )
    if trainer != "dpo":
        parser.description = (
            f"`--trainer {trainer}`: {DESCRIPTIONS[trainer]} + the decorrelation penalty ({trainer_class.__name__}: `trl "
            f"{trainer}`'s options and {config.__name__}'s), measured and saved. {DATA_HELP[trainer]}"
        )
    return parser


class LossLine(TrainerCallback):
    """One console line per logged step: the optimised loss, TRL's `loss`, as the trainer's own loss (`name`: DPO's,
    SFT's, ...) plus the weighted penalty (`decorrelation/<name>_loss` and `decorrelation/penalty` in the logs). Where
    the trainer does not log its own loss, the line shows the loss and the penalty."""

    def __init__(self, coef: float, name: str = "DPO"):
        self.coef = coef
        self.name = name
        self.key = f"decorrelation/{name.lower()}_loss"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        for prefix, what in (("", "step"), ("eval_", "eval at step")):
            loss, penalty = logs.get(f"{prefix}loss"), logs.get(f"{prefix}decorrelation/penalty")
            if loss is None or penalty is None:
                continue
            base = logs.get(f"{prefix}{self.key}")
            parts = (
                f"= {self.name} loss {base:.4f} + {self.coef:g} x penalty {penalty:.4f}"
                if base is not None
                else f"({self.name} loss + {self.coef:g} x penalty {penalty:.4f})"
            )
            print(f"{what} {state.global_step}/{state.max_steps}: loss {loss:.4f} {parts}")


def probe_prompts(dataset, max_samples: int | None = None) -> list:
    """The first `max_samples` distinct prompts of an eval split, as probes: its `prompt` column (an unpaired KTO split
    holds each prompt twice), else its `text`, else each `messages` conversation without its last assistant turn."""
    names = column_names(dataset)
    if "prompt" in names:
        prompt_of = lambda row: row["prompt"]  # noqa: E731
    elif "text" in names:
        prompt_of = lambda row: row["text"]  # noqa: E731
    elif "messages" in names:

        def prompt_of(row):
            messages = row["messages"]
            last = messages[-1] if messages else {}
            return messages[:-1] if len(messages) > 1 and last.get("role") == "assistant" else messages

    else:
        raise ValueError(
            f"the test split has no 'prompt', 'text' or 'messages' column to take probe prompts from (its columns "
            f"are {names}): set `monosemanticity_probes`"
        )
    prompts = [prompt_of(row) for row in dataset]
    return [prompts[i] for i in first_occurrences(prompts)[:max_samples]]


def load_splits(script_args: DecPOScriptArguments, seed: int):
    if not script_args.dataset_name:
        raise ValueError(
            "`dataset_name` is required: a Hub dataset id, a local json/jsonl/csv/parquet file, or a "
            "folder saved with `save_to_disk`"
        )
    dataset = load_preference_dataset(
        script_args.dataset_name,
        script_args.dataset_config,
        script_args.dataset_format,
        script_args.dataset_streaming,
        script_args.trainer,
    )
    if script_args.dataset_train_split not in dataset:
        raise ValueError(
            f"`dataset_train_split` {script_args.dataset_train_split!r} is not in the dataset; its splits "
            f"are {list(dataset)}"
        )
    train = dataset[script_args.dataset_train_split]
    test = dataset.get(script_args.dataset_test_split)
    if test is not None and script_args.dataset_test_size > 0:
        raise ValueError(
            f"the dataset has a {script_args.dataset_test_split!r} split, so `dataset_test_size` would be "
            "ignored: unset it, or name another `dataset_test_split`"
        )
    if test is None and script_args.dataset_test_size > 0:
        parts = train.train_test_split(test_size=script_args.dataset_test_size, seed=seed)
        train, test = parts["train"], parts["test"]
    # the pairs (or a dataset in the trainer's own format) are split; then each side gets the trainer's rows
    return tuple(None if part is None else pairs_to_trainer(part, script_args.trainer) for part in (train, test))


def run(script_args: DecPOScriptArguments, training_args: DecPOConfig, model_args: ModelConfig):
    """Train as the TRL script of ``script_args.trainer`` does (``trl dpo`` by default), with the penalty and the
    callback; returns the trainer. ``training_args`` is that trainer's config (:data:`TRAINER_CLASSES`)."""
    from trl import get_peft_config, get_quantization_config

    from ..monosemanticity import MonosemanticityCallback

    name = script_args.trainer
    config_class = TRAINER_CLASSES[name][0]
    if not isinstance(training_args, config_class):
        raise ValueError(
            f"`--trainer {name}` trains with a {config_class.__name__}, got a {type(training_args).__name__}: build "
            f"the parser with `make_parser(trainer={name!r})`"
        )
    if not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required: a Hub id or a local model folder")
    check_model_source(model_args.model_name_or_path, "`model_name_or_path`", model_args.model_revision)
    if script_args.dataset_name:
        check_dataset_source(script_args.dataset_name, "`dataset_name`")
    if model_args.load_in_4bit:
        release_bitsandbytes_notice()
    # `device` sets up the processes with the run's own settings (use_cpu, backend) before deciding anything
    if training_args.device.type == "cpu":  # no accelerator to pin for (as `--use_cpu` does): no torch warning
        training_args.dataloader_pin_memory = False
    resume = prepare_output_dir(
        training_args.output_dir,
        training_args.resume_from_checkpoint,
        script_args.overwrite_output_dir,
        (model_args.model_name_or_path, script_args.dataset_name, script_args.monosemanticity_probes),
    )
    train, test = load_splits(script_args, training_args.seed)
    strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
    if strategy != "no" and test is None:
        raise ValueError(
            f"`eval_strategy={strategy!r}` needs a test split: the dataset has no "
            f"{script_args.dataset_test_split!r} split; set `dataset_test_size` or `dataset_test_split`"
        )
    probes = script_args.monosemanticity_probes
    measure = script_args.monosemanticity and (test is not None or probes is not None)
    if script_args.monosemanticity and not measure and training_args.process_index == 0:
        # as `trl dpo` trains without evaluation when there is no test split
        print(
            f"trl-decpo train: no {script_args.dataset_test_split!r} split and no --monosemanticity_probes: training "
            "without the monosemanticity measurements (--dataset_test_size 0.05 holds out pairs for them, or "
            "--monosemanticity_probes FILE)",
            file=sys.stderr,
        )
    if measure and probes is None and name != "dpo":
        # DPO's callback reads the prompts of its eval dataset; the others get the split's distinct prompts
        probes = probe_prompts(test, script_args.monosemanticity_max_samples)
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}
    if name == "reward" and model_args.use_peft and model_args.lora_task_type == "CAUSAL_LM":
        # ModelConfig's default; a reward model is a sequence classifier (its `score` head is then trained in full)
        model_args.lora_task_type = "SEQ_CLS"
    # The reward trainer loads the model as AutoModelForSequenceClassification with num_labels=1 and sets its pad token
    # (as `trl reward` does); the others load a causal LM.
    trainer = TRAINER_CLASSES[name][2](
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train,
        eval_dataset=test,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    if trainer.decorrelation_enabled:
        settings = trainer.decorrelation_settings()
        trainer.accelerator.print(
            f"trl-decpo train: penalty on decoder layers {settings['decorrelation_layers']} at "
            f"{settings['decorrelation_site']}, coefficient {settings['decorrelation_coef']}"
        )
        trainer.add_callback(LossLine(settings["decorrelation_coef"], trainer.decorrelation_base_name()))
    if measure:
        trainer.add_callback(
            MonosemanticityCallback(
                trainer,
                probes=probes,
                layers=script_args.monosemanticity_layers,
                max_samples=script_args.monosemanticity_max_samples,
                pooling=script_args.monosemanticity_pooling,
            )
        )
    if script_args.ignore_bias_buffers:  # as `trl dpo` does, for DDP
        ignore_bool_buffers_in_ddp(trainer.model)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    # The card's title and quick-start use the model name (as DPOTrainer's checkpoints do); a local data path is no
    # Hub dataset to link to.
    model_name = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
    dataset_name = None if os.path.exists(script_args.dataset_name) else script_args.dataset_name
    trainer.create_model_card(model_name=model_name.split("/")[-1], dataset_name=dataset_name)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir} (model card: README.md)")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}")
    trainer.accelerator.print(next_steps(name, script_args, training_args, model_args))
    return trainer


def main(parser: TrainParser, argv: list[str]) -> int:
    """Parse `argv` (the options after `train`) with the parser of the trainer it asks for (`parser` itself when that
    is its trainer), train, and finish as the TRL scripts do."""
    try:
        try:
            name = choose_trainer(argv)
        except ValueError as err:  # before any parser is built or anything loads
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 2
        if getattr(parser, "trainer", "dpo") != name:
            parser = make_parser(parser.prog, name)
        try:
            script_args, training_args, model_args = parser.parse_args_and_config(argv)
        except SystemExit as done:  # --help, or argparse's error: the usage line, then the message
            return done.code if isinstance(done.code, int) else 2
        if script_args.trainer != name:  # e.g. an abbreviated `--train sft`, which argparse accepts
            raise ValueError(
                f"the options were read for `--trainer {name}` but `trainer` is {script_args.trainer!r}: write "
                f"`--trainer {script_args.trainer}` in full"
            )
        # transformers and TRL create `output_dir` while building the trainer: a run refused there leaves no empty one
        with removed_if_left_empty(training_args.output_dir):
            trainer = run(script_args, training_args, model_args)
    except (ValueError, OSError) as err:  # bad options, missing files or datasets: one line, before training
        print(f"trl-decpo train: error: {err}", file=sys.stderr)
        return 2
    # Only the main process writes the card (and pushes): the others would otherwise reach `end()` first and tear the
    # process group down under it (seen as an intermittent hang at exit with 2 gloo processes).
    trainer.accelerator.wait_for_everyone()
    trainer.end()  # finish the trackers and the process group, as `trl dpo` does
    return 0
