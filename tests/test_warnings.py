"""A normal run prints no warning: a short DecPOTrainer training with TRL's default settings (activation checkpointing
on) and the monosemanticity callback, `trl-decpo dpo` (its script, as launched), and each measuring command, recorded
with `simplefilter("always")` (the suite's own `filterwarnings` hide nothing here). The decorrelated SFT / KTO /
reward / GRPO / RLOO trainers: tests/trainers/test_decorrelated.py. Where the warnings came from: compat assumption
16."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.helpers import (
    PAIRS,
    checkpointing,
    decpo_config,
    make_dataset,
    make_model,
    make_tokenizer,
    model_path,
    warnings_of,
)
from trl_decpo import DecPOTrainer, MonosemanticityCallback
from trl_decpo.cli import main
from trl_decpo.cli.scripts import dpo


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_a_decpo_training_with_the_callback_prints_no_warning(tmp_path, peft):
    def train():
        # the suite's fast settings, but activation checkpointing left to TRL's default (on)
        args = decpo_config(tmp_path, **checkpointing(None), eval_strategy="steps", eval_steps=1)
        trainer = DecPOTrainer(
            model=model_path(),
            args=args,
            train_dataset=make_dataset(),
            eval_dataset=make_dataset(4),
            processing_class=make_tokenizer(),
            peft_config=LoraConfig(r=2, target_modules=["up_proj"], task_type="CAUSAL_LM") if peft else None,
        )
        trainer.add_callback(MonosemanticityCallback(trainer))
        trainer.train()
        return trainer

    trainer, shown = warnings_of(train)
    assert not shown, "\n".join(shown)
    assert trainer.args.activation_checkpointing and trainer.model.is_activation_checkpointing  # what was quiet ran
    assert [h["step"] for h in trainer.state.log_history if "eval_monosemanticity/fd/mean" in h] == [0, 1, 2]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A base model, a LoRA adapter on it, probe prompts and preference pairs."""
    root = tmp_path_factory.mktemp("warnings")
    torch.manual_seed(0)
    adapter = get_peft_model(make_model(), LoraConfig(r=2, target_modules=["up_proj"], init_lora_weights=False))
    adapter.save_pretrained(root / "adapter")
    (root / "prompts.txt").write_text("\n".join(prompt for prompt, _, _ in PAIRS) + "\n")
    rows = [{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r in PAIRS * 2]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return {
        "base": model_path(),
        "adapter": str(root / "adapter"),
        "prompts": str(root / "prompts.txt"),
        "pairs": str(root / "pairs.jsonl"),
    }


COMMANDS = {
    "measure": ["measure", "{base}", "--prompts", "{prompts}"],
    "compare": ["compare", "{base}", "{adapter}", "--prompts", "{prompts}"],
    "top-tokens": ["top-tokens", "{base}", "--layer", "1", "--prompts", "{prompts}"],
    "evaluate": ["evaluate", "{base}", "{adapter}", "--dataset", "{pairs}", "--max_new_tokens", "4"],
    # no --use_cpu: on a machine without a GPU the command picks the CPU itself (bf16 off, no memory to pin)
    "dpo": [
        *("dpo", "--model_name_or_path", "{base}", "--dataset_name", "{pairs}", "--test_split_size", "0.25"),
        *("--max_steps", "1", "--per_device_train_batch_size", "2", "--max_length", "32", "--report_to", "none"),
        *("--save_strategy", "no", "--dataloader_num_workers", "0"),
    ],
}


def run_command(argv: list[str]) -> int:
    """`trl-decpo ARGV`; a training command's script in this process (launched, its warnings would not be seen)."""
    if argv[0] != "dpo":
        return main(argv)
    dpo.main(*dpo.make_parser().parse_args_and_config(argv[1:]))
    return 0


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_prints_no_warning(folders, tmp_path, command):
    argv = [arg.format(**folders) for arg in COMMANDS[command]] + ["--output_dir", str(tmp_path / "out")]
    code, shown = warnings_of(lambda: run_command(argv))
    assert code == 0
    assert not shown, "\n".join(shown)
    assert any((tmp_path / "out").iterdir())  # it ran to the end
