# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""``trl-decpo train``: ``trl dpo`` with the DecPO penalty and the monosemanticity callback.

Same arguments as ``trl dpo`` (``ScriptArguments``, every ``DPOConfig`` field, ``ModelConfig`` with its PEFT/LoRA and
4-bit options, a YAML file through ``--config``), parsed with ``TrlParser``, plus the ``DecPOConfig`` fields and the
options below. Loads the model and data, attaches ``MonosemanticityCallback``, trains, saves (model card with the
DecPO settings and the last measurements) and, with ``--push_to_hub``, pushes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields

from transformers import TrainerCallback
from trl import DPOConfig, ModelConfig, ScriptArguments

from ..monosemanticity.probes import POOLING_CHOICES
from ..trainer import DecPOConfig
from ..trainer.compat import ignore_bool_buffers_in_ddp
from ..utils import check_choice, check_int, check_layers
from .base import command_parser
from .data import DATASET_FORMATS, load_preference_dataset
from .notices import release_bitsandbytes_notice
from .output_dir import prepare_output_dir
from .sources import check_dataset_source, check_model_source
from .train_parser import TrainParser, own_fields


@dataclass
class DecPOScriptArguments(ScriptArguments):
    """``trl``'s script arguments (``dataset_name``, ``dataset_config``, splits, ...) plus data formats and probes."""

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
        default=True, metadata={"help": "Measure FD and sparsity per layer with MonosemanticityCallback."}
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
        check_choice("dataset_format", self.dataset_format, DATASET_FORMATS)
        if not 0.0 <= self.dataset_test_size < 1.0:
            raise ValueError(f"`dataset_test_size` must be in [0, 1), got {self.dataset_test_size}")
        check_int("monosemanticity_max_samples", self.monosemanticity_max_samples, 2)
        check_choice("monosemanticity_pooling", self.monosemanticity_pooling, POOLING_CHOICES)
        # YAML values skip argparse's type conversion
        self.monosemanticity_layers = check_layers("monosemanticity_layers", self.monosemanticity_layers)


def make_parser(prog: str | None = None) -> TrainParser:
    """The `train` parser, as TRL's scripts build theirs (`prog` names it in a script of one's own): short `--help`,
    full `--help-all`, mixed precision off without a GPU (:mod:`.train_parser`)."""
    return command_parser(
        "train",
        (DecPOScriptArguments, DecPOConfig, ModelConfig),
        prog,
        TrainParser,
        decpo_fields=own_fields(DecPOConfig, DPOConfig),
        data_fields=[f.name for f in fields(DecPOScriptArguments)],
    )


class LossLine(TrainerCallback):
    """One console line per logged step: the optimised loss, TRL's `loss`, as DPO's loss plus the weighted penalty
    (`decorrelation/dpo_loss` and `decorrelation/penalty` in the logs)."""

    def __init__(self, coef: float):
        self.coef = coef

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        for prefix, what in (("", "step"), ("eval_", "eval at step")):
            values = [
                logs.get(f"{prefix}{key}") for key in ("loss", "decorrelation/dpo_loss", "decorrelation/penalty")
            ]
            if None not in values:
                loss, dpo_loss, penalty = values
                print(
                    f"{what} {state.global_step}/{state.max_steps}: loss {loss:.4f} = DPO loss {dpo_loss:.4f} + "
                    f"{self.coef:g} x penalty {penalty:.4f}"
                )


def load_splits(script_args: DecPOScriptArguments, seed: int):
    if not script_args.dataset_name:
        raise ValueError(
            "`dataset_name` is required: a Hub dataset id, a local json/jsonl/csv/parquet file, or a "
            "folder saved with `save_to_disk`"
        )
    dataset = load_preference_dataset(
        script_args.dataset_name, script_args.dataset_config, script_args.dataset_format, script_args.dataset_streaming
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
    return train, test


def run(script_args: DecPOScriptArguments, training_args: DecPOConfig, model_args: ModelConfig):
    """Train as ``trl dpo`` does, with the penalty and the callback; returns the trainer."""
    from trl import get_peft_config, get_quantization_config

    from ..monosemanticity import MonosemanticityCallback
    from ..trainer import DecPOTrainer

    if not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required: a Hub id or a local model folder")
    check_model_source(model_args.model_name_or_path, "`model_name_or_path`", model_args.model_revision)
    if script_args.dataset_name:
        check_dataset_source(script_args.dataset_name, "`dataset_name`")
    if model_args.load_in_4bit:
        release_bitsandbytes_notice()
    _ = training_args.device  # set up the processes with the run's own settings (use_cpu, backend) before deciding
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
    if script_args.monosemanticity and test is None and script_args.monosemanticity_probes is None:
        raise ValueError(
            "the monosemanticity callback needs probe prompts: set `monosemanticity_probes`, a test split "
            "(`dataset_test_split` / `dataset_test_size`), or `--monosemanticity false`"
        )
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}
    trainer = DecPOTrainer(
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
        trainer.add_callback(LossLine(settings["decorrelation_coef"]))
    if script_args.monosemanticity:
        trainer.add_callback(
            MonosemanticityCallback(
                trainer,
                probes=script_args.monosemanticity_probes,
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
    return trainer


def main(parser: TrainParser, argv: list[str]) -> int:
    """Parse `argv` (the options after `train`) with `parser`, train, and finish as `trl dpo` does."""
    try:
        try:
            script_args, training_args, model_args = parser.parse_args_and_config(argv)
        except SystemExit as done:  # --help, or argparse's error: the usage line, then the message
            return done.code if isinstance(done.code, int) else 2
        trainer = run(script_args, training_args, model_args)
    except (ValueError, OSError) as err:  # bad options, missing files or datasets: one line, before training
        print(f"trl-decpo train: error: {err}", file=sys.stderr)
        return 2
    # Only the main process writes the card (and pushes): the others would otherwise reach `end()` first and tear the
    # process group down under it (seen as an intermittent hang at exit with 2 gloo processes).
    trainer.accelerator.wait_for_everyone()
    trainer.end()  # finish the trackers and the process group, as `trl dpo` does
    return 0
