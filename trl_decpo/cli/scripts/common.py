# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What the training scripts share: the options they add to TRL's, their parser, the checks before anything loads,
the data as each trainer takes it, and the run (callbacks, training, model card, push, next steps)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

from transformers import TrainerCallback
from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser, get_dataset

from trl_decpo.cli.base import option
from trl_decpo.cli.commands import COMMANDS
from trl_decpo.data import DATASET_FORMATS, load_named, pairs_to_trainer, probe_prompts, to_pairs
from trl_decpo.monosemanticity.probes import PROBE_POOLING_CHOICES
from trl_decpo.precision import fit_mixed_precision
from trl_decpo.sources import check_dataset_source, check_model_source
from trl_decpo.utils import check_choice, check_int, check_layers


@dataclass
class DecPOScriptArguments(ScriptArguments):
    dataset_format: str = option(
        "preference", "A TRL dataset, or the columns of a paper's task.", choices=list(DATASET_FORMATS)
    )
    monosemanticity: bool = option(
        True, "Measure per-layer FD and sparsity (MonosemanticityCallback) on the test prompts or the probes."
    )
    monosemanticity_probes: str | None = option(None, "A probe file or dataset (`trl-decpo measure --help`) instead.")
    monosemanticity_layers: list[int] | None = option(None, "Layers measured (all).")
    monosemanticity_max_samples: int = option(1000, "At most this many probe prompts.")
    monosemanticity_pooling: str = option(
        "auto", "Probe tokens measured (docs/measurement.md).", choices=list(PROBE_POOLING_CHOICES)
    )

    def __post_init__(self):
        check_choice("dataset_format", self.dataset_format, DATASET_FORMATS)
        check_int("monosemanticity_max_samples", self.monosemanticity_max_samples, 2)
        check_choice("monosemanticity_pooling", self.monosemanticity_pooling, PROBE_POOLING_CHOICES)
        self.monosemanticity_layers = check_layers("monosemanticity_layers", self.monosemanticity_layers)


class ScriptParser(TrlParser):
    """``TrlParser`` that turns mixed precision off where it would fail or be slow (``fit_mixed_precision``), saying so
    unless ``hold_notes``, and passes the deprecated ``gradient_checkpointing*`` options on under their new names."""

    hold_notes = False

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        turned_off, self.precision_note = fit_mixed_precision(namespace)
        self.precision_args = [arg for name in turned_off for arg in (f"--{name}", "false")]
        if self.precision_note and not self.hold_notes:
            print(f"{self.prog}: {self.precision_note}", file=sys.stderr)
        for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
            new = old.replace("gradient", "activation")
            if getattr(namespace, new, 0) is None and getattr(namespace, old, None) is not None:
                setattr(namespace, new, getattr(namespace, old))
                setattr(namespace, old, None)
        return namespace, rest


def make_parser(name: str, config, subparsers=None, prog: str | None = None):
    """Script ``name``'s parser, as TRL's scripts build theirs; ``config`` is its trainer's decorrelated config."""
    types, command = (DecPOScriptArguments, config, ModelConfig, DatasetMixtureConfig), COMMANDS[name]
    if subparsers is not None:
        return subparsers.add_parser(name, help=command.help, dataclass_types=types)
    prog = prog or f"trl-decpo {name}"
    return ScriptParser(types, prog=prog, description=command.help, usage=command.usage)


def run_script(parser, main) -> None:
    """``python NAME.py ARGS``: bad input is one line and exit status 2. Unknown ``--config`` keys are accelerate's."""
    try:
        main(*parser.parse_args_and_config(fail_with_unknown_args=False))
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def resume_point(output_dir: str, resume) -> tuple[str | None, str | None]:
    """The checkpoint to resume from (a path, or ``true`` / ``last`` for the last one in ``output_dir``) and what to
    say of it; a ``ValueError`` for a used ``output_dir`` without it: a run never clobbers an earlier one silently."""
    from transformers.trainer_utils import get_last_checkpoint

    existing = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if resume in (None, "", "false", "False"):
        if existing:
            checkpoints = [name for name in existing if name.startswith("checkpoint-")]
            what = f"a run with checkpoints {checkpoints}" if checkpoints else f"files {existing[:5]}"
            todo = "Pass `--resume_from_checkpoint true` to continue it, or choose" if checkpoints else "Choose"
            raise ValueError(
                f"`output_dir` {output_dir!r} already holds {what}. {todo} an empty `--output_dir` (or delete that "
                "folder to start over there)."
            )
        return None, None
    if str(resume) in ("true", "True", "last"):
        resume = get_last_checkpoint(output_dir) if existing else None
        if resume is None:
            raise ValueError(
                f"`resume_from_checkpoint` asks for the last checkpoint in `output_dir` {output_dir!r}, which holds "
                "none (`checkpoint-<step>` folders); drop it to start a new run"
            )
    elif not os.path.isdir(resume):
        raise ValueError(f"`resume_from_checkpoint` {resume!r} is not a checkpoint folder")
    return resume, f"resuming the run in {output_dir} from {os.path.basename(os.path.normpath(resume))}"


def check_inputs(script_args, training_args, model_args, dataset_args):
    """The checks before anything loads (model, data, output folder), run before launching too: ``resume_point``'s."""
    if not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required: a Hub id or a local model folder")
    check_model_source(model_args.model_name_or_path, "`model_name_or_path`", model_args.model_revision)
    if not (script_args.dataset_name or dataset_args.datasets):
        raise ValueError(
            "`dataset_name` is required (or `datasets:` in the --config file): a Hub id, a file or folder"
        )
    for name in [script_args.dataset_name, *(dataset.path for dataset in dataset_args.datasets)]:
        if name:
            check_dataset_source(name, "`dataset_name`")
    return resume_point(training_args.output_dir, training_args.resume_from_checkpoint)


def prepare(name: str, script_args, training_args, model_args, dataset_args):
    """The checks, the model options as ``trl NAME`` sets them; the checkpoint, train and test splits (or ``None``)."""
    resume, message = check_inputs(script_args, training_args, model_args, dataset_args)
    if message and training_args.process_index == 0:
        print(f"trl-decpo {name}: {message}", file=sys.stderr)
    if training_args.device.type == "cpu":  # no accelerator to pin memory for: no torch warning
        training_args.dataloader_pin_memory = False
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    if dataset_args.datasets and script_args.dataset_name:  # as `trl dpo` says
        print(f"trl-decpo {name}: `datasets` and `dataset_name` both given: the mixture is used", file=sys.stderr)
    if dataset_args.datasets:  # TRL's mixture, held out below with the run's seed
        dataset = get_dataset(replace(dataset_args, test_split_size=None))
    else:
        dataset = load_named(script_args.dataset_name, script_args.dataset_config, script_args.dataset_streaming)
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    if train_split not in dataset:
        raise ValueError(
            f"`dataset_train_split` {train_split!r} is not in the dataset; its splits are {list(dataset)}"
        )
    train, test = (
        to_pairs(dataset[split], name, script_args.dataset_format, f"`trl-decpo {name}`") if split in dataset else None
        for split in (train_split, test_split)
    )
    if dataset_args.test_split_size:
        if test is not None:
            raise ValueError(
                f"the dataset has a {test_split!r} split, so `test_split_size` would be ignored: unset it, or name "
                "another `dataset_test_split`"
            )
        train, test = train.train_test_split(test_size=dataset_args.test_split_size, seed=training_args.seed).values()
    strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
    if strategy != "no" and test is None:
        raise ValueError(
            f"`eval_strategy={strategy!r}` needs a test split: the dataset has no {test_split!r} split; set "
            "`test_split_size` or `dataset_test_split`"
        )
    return resume, *(part if part is None else pairs_to_trainer(part, name) for part in (train, test))


class LossLine(TrainerCallback):
    """One console line per logged step: the loss as the trainer's own loss (``name``) plus the weighted penalty."""

    def __init__(self, coef: float, name: str = "DPO"):
        self.coef, self.name, self.key = coef, name, f"decorrelation/{name.lower()}_loss"

    def on_log(self, args, state, control, logs=None, **kwargs):
        for prefix, what in (("", "step"), ("eval_", "eval at step")):
            loss, penalty = (logs or {}).get(f"{prefix}loss"), (logs or {}).get(f"{prefix}decorrelation/penalty")
            if not state.is_world_process_zero or loss is None or penalty is None:
                continue
            base = logs.get(f"{prefix}{self.key}")
            if base is not None:
                parts = f"= {self.name} loss {base:.4f} + {self.coef:g} x penalty {penalty:.4f}"
            else:
                parts = f"({self.name} loss + {self.coef:g} x penalty {penalty:.4f})"
            print(f"{what} {state.global_step}/{state.max_steps}: loss {loss:.4f} {parts}")


def train(trainer, test, resume, script_args, model_args):
    """Attach the callbacks, train, save with the model card, push if asked and print the next steps, as TRL's do."""
    from trl_decpo import MonosemanticityCallback

    args, name = trainer.args, trainer.decorrelation_base_name().lower()
    if trainer.decorrelation_enabled:
        settings = trainer.decorrelation_settings()
        trainer.accelerator.print(
            f"trl-decpo {name}: penalty on decoder layers {settings['decorrelation_layers']} at "
            f"{settings['decorrelation_site']}, coefficient {settings['decorrelation_coef']}"
        )
        trainer.add_callback(LossLine(settings["decorrelation_coef"], trainer.decorrelation_base_name()))
    probes = script_args.monosemanticity_probes
    if script_args.monosemanticity and test is None and probes is None and args.process_index == 0:
        print(
            f"trl-decpo {name}: no {script_args.dataset_test_split!r} split and no --monosemanticity_probes: training "
            "without the monosemanticity measurements (--test_split_size 0.05 holds out pairs for them, or "
            "--monosemanticity_probes FILE)",
            file=sys.stderr,
        )
    elif script_args.monosemanticity and (test is not None or probes is not None):
        if probes is None and name != "dpo":  # DPO's callback reads the prompts of its eval dataset
            probes = probe_prompts(test, script_args.monosemanticity_max_samples)
        options = {"layers": script_args.monosemanticity_layers, "pooling": script_args.monosemanticity_pooling}
        options["max_samples"] = script_args.monosemanticity_max_samples
        trainer.add_callback(MonosemanticityCallback(trainer, probes=probes, **options))
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    # the card names the model (as TRL's checkpoints do); a local data path is no Hub dataset to link to
    model_name = (args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))).split("/")[-1]
    dataset = script_args.dataset_name
    dataset = None if not dataset or os.path.exists(dataset) else dataset
    trainer.create_model_card(model_name=model_name, dataset_name=dataset)
    trainer.accelerator.print(f"Model saved to {args.output_dir} (model card: README.md)")
    if args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}")
    trainer.accelerator.print(next_steps(name, script_args, args, model_args))
    trainer.accelerator.wait_for_everyone()  # only the main process writes the card and pushes: then all end together
    trainer.end()
    return trainer


def next_steps(name: str, script_args, training_args, model_args) -> str:
    """What to run next with the saved model of script ``name`` (printed after training)."""
    out, base = training_args.output_dir, model_args.model_name_or_path
    adapter = " (an adapter: merge it into its base model first)" if model_args.use_peft else ""
    probes = script_args.monosemanticity_probes or "PROMPTS"
    lines = [f"  FD and sparsity per layer against the base model: trl-decpo compare {base} {out} --prompts {probes}"]
    if name == "reward":
        lines = [
            f"  score text with it: AutoModelForSequenceClassification.from_pretrained({out!r}){adapter}, one reward "
            "per sequence",
            f"  reward model of an online trainer: DecorrelatedGRPOTrainer(..., reward_funcs={out!r}){adapter} "
            "(Python; docs/trainers.md)",
        ]
    elif name == "sft":
        lines.append(
            f"  DPO from this model, the usual next stage: trl-decpo dpo --model_name_or_path {out}{adapter} "
            f"--dataset_name {script_args.dataset_name or 'DATASET'} --output_dir {os.path.normpath(out)}-dpo"
        )
    else:
        lines.append(
            f"  reward accuracy and margin against the base model: trl-decpo evaluate {base} {out} --dataset PAIRS"
        )
    return "Next steps:\n" + "\n".join(lines)
