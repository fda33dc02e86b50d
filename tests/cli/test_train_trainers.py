"""`trl-decpo sft|kto|reward` (trl_decpo/cli/scripts/): the preference data mapped to what each trainer takes (or passed
through in its own format), the decorrelated trainer trained, logged, printed and carded, each command's options, and
the errors. The scripts' `main` runs in-process."""

import json
import os
import re

import pytest
from datasets import Dataset

from tests.helpers import FAST_TRAIN_ARGS, PAIRS, model_path
from trl_decpo import data
from trl_decpo.cli import main as cli_main
from trl_decpo.cli.scripts import common, kto, reward, sft


FAST = [*FAST_TRAIN_ARGS, "--save_strategy", "no"]
CHOSEN = {prompt: " " + chosen for prompt, chosen, _ in PAIRS}
REJECTED = {prompt: " " + rejected for prompt, _, rejected in PAIRS}
SCRIPTS = {"sft": sft, "kto": kto, "reward": reward}


def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return str(path)


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": CHOSEN[p], "rejected": REJECTED[p]} for p in CHOSEN]
    )


def card(out):
    with open(os.path.join(out, "README.md"), encoding="utf-8") as f:
        return f.read()


def run_trainer(name, data, out, *extra):
    """`trl-decpo NAME ...` in this process, as the launched script runs it; returns the trainer (to look inside)."""
    argv = ["--model_name_or_path", model_path(), "--dataset_name", data, "--test_split_size", "0.25",
            "--output_dir", str(out), "--decorrelation_layers", "1", "--decorrelation_coef", "0.5", *FAST, *extra]  # fmt: skip
    script = SCRIPTS[name]
    return script.main(*script.make_parser().parse_args_and_config(argv))


def without_eos(trainer, texts):
    """The texts as given: the SFT, KTO and reward trainers append EOS to those they keep in their datasets."""
    eos = trainer.processing_class.eos_token
    return [text.removesuffix(eos) for text in texts]


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def check_card(out, name, tag):
    """The saved card names the trainer, carries the decorrelation settings and tags, and the measurements."""
    text = card(out)
    assert f"| `trainer` | `{name}` |" in text
    assert "| `decorrelation_coef` | `0.5` |" in text and "| `decorrelation_layers` | `[1]` |" in text
    assert re.search(rf"tags:(\n- .*)*\n- {tag}\n", text) and re.search(r"tags:(\n- .*)*\n- decorrelation\n", text)
    assert "## Monosemanticity" in text and "| 1 (penalised) |" in text


def loss_lines(printed, name):
    """The (loss, base loss, penalty) of each printed step line naming the `name` loss; each line adds up."""
    steps = re.findall(rf"^step \d/2: loss (\S+) = {name} loss (\S+) \+ 0.5 x penalty (\S+)$", printed, re.M)
    for loss, base, penalty in steps:
        assert float(loss) == pytest.approx(float(base) + 0.5 * float(penalty), abs=2e-4)
    return steps


# ----------------------------------------------------------------------------------------------------------------------
# Training, per trainer
# ----------------------------------------------------------------------------------------------------------------------


def test_sft_trains_on_the_chosen_completions(tmp_path, pairs_file, capsys):
    from trl_decpo.trainers import DecorrelatedSFTTrainer

    out = tmp_path / "sft"
    trainer = run_trainer("sft", pairs_file, out)
    assert isinstance(trainer, DecorrelatedSFTTrainer) and (out / "model.safetensors").is_file()
    rows = list(zip(trainer.train_dataset["prompt"], trainer.train_dataset["completion"], strict=True))
    eval_prompts = trainer.eval_dataset["prompt"]
    assert len(rows) == 6 and len(eval_prompts) == 2 and not set(eval_prompts) & {p for p, _ in rows}
    completions = without_eos(trainer, [completion for _, completion in rows])
    assert completions == [CHOSEN[prompt] for prompt, _ in rows]  # prompt + chosen, never rejected
    assert logged(trainer, "decorrelation/penalty") and logged(trainer, "decorrelation/layer_1")
    check_card(out, "SFT", "sft")
    history = json.load(open(out / "monosemanticity.json"))
    assert [r["step"] for r in history] == [0, 2] and history[0]["num_prompts"] == 2  # the 2 held-out pairs' prompts
    printed = capsys.readouterr().out
    assert "trl-decpo sft: penalty on decoder layers [1] at mlp.up_proj:output, coefficient 0.5" in printed
    steps = loss_lines(printed, "SFT")  # from `decorrelation/sft_loss`
    assert len(steps) == 2 and all(float(penalty) > 0 for *_, penalty in steps), printed
    assert "DPO loss" not in printed
    next_steps = printed.split("Next steps:")[1]
    assert f"trl-decpo dpo --model_name_or_path {out} --dataset_name {pairs_file} --output_dir {out}-dpo" in next_steps
    assert f"trl-decpo compare {model_path()} {out}" in next_steps


def test_kto_unpairs_each_pair_into_a_desirable_and_an_undesirable_row(tmp_path, pairs_file, capsys):
    from trl_decpo import MonosemanticityCallback
    from trl_decpo.trainers import DecorrelatedKTOTrainer

    out = tmp_path / "kto"
    trainer = run_trainer("kto", pairs_file, out)
    assert isinstance(trainer, DecorrelatedKTOTrainer)
    for split, pairs in ((trainer.train_dataset, 6), (trainer.eval_dataset, 2)):
        rows = list(zip(split["prompt"], without_eos(trainer, split["completion"]), split["label"], strict=True))
        assert len(rows) == 2 * pairs
        assert sorted((p, c) for p, c, label in rows if label) == sorted((p, CHOSEN[p]) for p in {r[0] for r in rows})
        assert sorted((p, c) for p, c, label in rows if not label) == sorted(
            (p, REJECTED[p]) for p in {r[0] for r in rows}
        )
    # the pairs are held out before unpairing: both rows of a pair are on the same side
    assert not set(trainer.train_dataset["prompt"]) & set(trainer.eval_dataset["prompt"])
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, MonosemanticityCallback))
    assert len(callback.probes) == 2  # each held-out prompt once, not once per row
    assert logged(trainer, "decorrelation/penalty") and logged(trainer, "decorrelation/kto_loss")
    printed = capsys.readouterr().out
    assert len(loss_lines(printed, "KTO")) == 2
    assert f"trl-decpo evaluate {model_path()} {out} --dataset PAIRS" in printed.split("Next steps:")[1]
    check_card(out, "KTO", "kto")


def test_reward_model_on_preference_pairs(tmp_path, pairs_file, capsys):
    from trl_decpo.trainers import DecorrelatedRewardTrainer

    out = tmp_path / "reward"
    trainer = run_trainer("reward", pairs_file, out)
    assert isinstance(trainer, DecorrelatedRewardTrainer)
    assert type(trainer.model).__name__ == "LlamaForSequenceClassification" and trainer.model.config.num_labels == 1
    assert trainer.model.config.pad_token_id == trainer.processing_class.pad_token_id is not None
    chosen = without_eos(trainer, [*trainer.train_dataset["chosen"], *trainer.eval_dataset["chosen"]])
    assert sorted(chosen) == sorted(p + c for p, c in CHOSEN.items())  # the pairs as they are (TRL joins the prompt)
    assert logged(trainer, "decorrelation/penalty") and logged(trainer, "decorrelation/reward_loss")
    printed = capsys.readouterr().out
    assert len(loss_lines(printed, "Reward")) == 2
    assert f"reward_funcs={str(out)!r}" in printed.split("Next steps:")[1] and "trl-decpo evaluate" not in printed
    saved = json.load(open(out / "config.json"))
    assert saved["architectures"] == ["LlamaForSequenceClassification"] and len(saved["id2label"]) == 1
    check_card(out, "Reward", "reward-trainer")


def test_a_lora_reward_model_trains_its_score_head_in_full(tmp_path, pairs_file):
    args = ["--use_peft", "--lora_target_modules", "q_proj", "up_proj", "--max_steps", "1", "--no_monosemanticity"]
    trainer = run_trainer("reward", pairs_file, tmp_path / "lora", *args)
    assert trainer.model.peft_config["default"].task_type == "SEQ_CLS"  # ModelConfig's CAUSAL_LM replaced
    assert any("score" in name and param.requires_grad for name, param in trainer.model.named_parameters())


@pytest.mark.parametrize(
    "name,rows",
    [
        ("sft", [{"text": f"{p}{CHOSEN[p]}"} for p in CHOSEN]),
        ("kto", [{"prompt": p, "completion": c, "label": i % 3 != 0} for i, (p, c) in enumerate(CHOSEN.items())]),
    ],
)
def test_a_dataset_in_the_trainers_own_format_is_used_as_it_is(tmp_path, name, rows):
    data = write_jsonl(tmp_path / "own.jsonl", rows)
    out = tmp_path / name
    trained = run_trainer(name, data, out)
    train, test = trained.train_dataset, trained.eval_dataset
    assert len(train) + len(test) == len(rows)  # not unpaired, not mapped
    for split in (train, test):
        for column in rows[0]:
            values = without_eos(trained, split[column]) if column != "label" else split[column]
            assert set(values) <= {row[column] for row in rows}
    assert logged(trained, "decorrelation/penalty")
    check_card(out, name.upper(), name)


# ----------------------------------------------------------------------------------------------------------------------
# The data mapping
# ----------------------------------------------------------------------------------------------------------------------


def to_trainer(dataset, name, dataset_format="preference"):
    """What a script does with a split: pairs (or the dataset in the trainer's own format), then the trainer's rows."""
    return data.pairs_to_trainer(data.to_pairs(dataset, name, dataset_format, f"`trl-decpo {name}`"), name)


def test_the_mapping_of_preference_data_per_trainer(pairs_file):
    pairs = Dataset.from_dict(
        {"prompt": ["a cat", "a dog"], "chosen": [" sat", " ran"], "rejected": [" ran", " sat"], "id": [1, 2]}
    )
    assert to_trainer(pairs, "sft").to_list() == [
        {"prompt": "a cat", "completion": " sat"},
        {"prompt": "a dog", "completion": " ran"},
    ]
    kto_rows = to_trainer(pairs, "kto").to_list()
    assert sorted((r["prompt"], r["completion"], r["label"]) for r in kto_rows) == [
        ("a cat", " ran", False),
        ("a cat", " sat", True),
        ("a dog", " ran", True),
        ("a dog", " sat", False),
    ]
    assert to_trainer(pairs, "reward").to_list() == pairs.to_list()  # chosen/rejected as they are
    assert to_trainer(pairs, "dpo") is pairs
    implicit = Dataset.from_dict({"chosen": ["the cat sat"], "rejected": ["the cat ran"]})
    assert to_trainer(implicit, "sft").to_list() == [{"prompt": "the cat", "completion": " sat"}]
    reframing = Dataset.from_dict({"situation": ["I failed"], "thought": ["I am bad"], "reframe": ["I can learn"]})
    assert to_trainer(reframing, "sft", "cognitive_reframing").to_list() == [
        {"prompt": "I failed", "completion": " I can learn"}
    ]
    streamed = list(to_trainer(pairs.to_iterable_dataset(), "kto"))
    assert sorted(r["label"] for r in streamed) == [False, False, True, True]
    loaded = data.load_named(pairs_file)["train"]  # the pairs, as a one-split DatasetDict
    assert loaded.column_names == ["prompt", "chosen", "rejected"] and len(loaded) == len(PAIRS)


@pytest.mark.parametrize(
    "name,columns",
    [
        ("sft", {"text": ["a b"]}),
        ("sft", {"messages": [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]}),
        ("sft", {"prompt": ["a"], "completion": [" b"]}),
        ("kto", {"prompt": ["a"], "completion": [" b"], "label": [True]}),
    ],
)
def test_own_formats_pass_through_unchanged(name, columns):
    dataset = Dataset.from_dict(columns)
    assert to_trainer(dataset, name) is dataset


def test_probe_prompts_are_the_distinct_prompts_of_the_test_split():
    kto_rows = Dataset.from_dict({"prompt": ["a", "b", "a", "b"], "completion": ["x", "y", "z", "w"]})
    assert data.probe_prompts(kto_rows) == ["a", "b"] and data.probe_prompts(kto_rows, max_samples=1) == ["a"]
    assert data.probe_prompts(Dataset.from_dict({"text": ["t1", "t2", "t1"]})) == ["t1", "t2"]
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert data.probe_prompts(Dataset.from_dict({"messages": [chat]})) == [chat[:1]]
    with pytest.raises(ValueError, match=r"no 'prompt', 'text' or 'messages' column \(it has \['x'\]\)"):
        data.probe_prompts(Dataset.from_dict({"x": [1]}))


# ----------------------------------------------------------------------------------------------------------------------
# The printed line
# ----------------------------------------------------------------------------------------------------------------------


def test_the_loss_line_names_each_trainers_loss_and_falls_back_without_it(capsys):
    from trl_decpo.trainers import TRAINERS

    names = [TRAINERS[name][1].decorrelation_base_name() for name in ("dpo", "sft", "kto", "reward")]
    assert names == ["DPO", "SFT", "KTO", "Reward"]
    state = type("State", (), {"is_world_process_zero": True, "global_step": 3, "max_steps": 9})()
    line = common.LossLine(2.0, "SFT")
    line.on_log(None, state, None, logs={"loss": 1.5, "decorrelation/sft_loss": 1.0, "decorrelation/penalty": 0.25})
    line.on_log(None, state, None, logs={"loss": 1.5, "decorrelation/penalty": 0.25})
    line.on_log(None, state, None, logs={"loss": 1.5})  # no penalty logged: no line
    line.on_log(None, state, None, logs={"eval_loss": 0.5, "eval_decorrelation/penalty": 0.125})
    assert capsys.readouterr().out.splitlines() == [
        "step 3/9: loss 1.5000 = SFT loss 1.0000 + 2 x penalty 0.2500",
        "step 3/9: loss 1.5000 (SFT loss + 2 x penalty 0.2500)",
        "eval at step 3/9: loss 0.5000 (SFT loss + 2 x penalty 0.1250)",
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Each command's options, errors
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,config,own,foreign",
    [
        ("dpo", "DecPOConfig", "--beta", "--packing"),
        ("sft", "DecorrelatedSFTConfig", "--packing", "--beta"),
        ("kto", "DecorrelatedKTOConfig", "--desirable_weight", "--packing"),
        ("reward", "DecorrelatedRewardConfig", "--center_rewards_coefficient", "--beta"),
    ],
)
def test_each_command_takes_its_trainers_options(capsys, name, config, own, foreign):
    assert cli_main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: trl-decpo {name} --model_name_or_path MODEL") and f"{config}'s" in text
    for option in ("--decorrelation_coef", "--dataset_format", "--monosemanticity_probes", "--datasets", own):
        assert f"\n  {option} " in text, option
    assert f"\n  {foreign} " not in text
    assert cli_main(["ppo", "--help"]) == 2  # no such command
    assert "invalid choice: 'ppo' (choose from 'dpo', 'sft', 'kto', 'reward'," in capsys.readouterr().err


@pytest.mark.parametrize(
    "name,rows,needs",
    [
        (
            "sft",
            {"question": ["q"], "answer": ["a"]},
            "a 'text' column, a 'messages' column, 'prompt' and 'completion'",
        ),
        ("kto", {"prompt": ["q"], "completion": ["a"]}, "the columns 'prompt', 'completion' and 'label'"),
        ("reward", {"prompt": ["q"], "completion": ["a"]}, "the columns 'chosen' and 'rejected'"),
    ],
)
def test_wrong_columns_name_what_the_trainer_needs(tmp_path, name, rows, needs):
    data = write_jsonl(
        tmp_path / "d.jsonl", [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    )
    out = tmp_path / "out"
    with pytest.raises(ValueError) as raised:
        run_trainer(name, data, out)
    assert f"`trl-decpo {name}` needs {needs}" in str(raised.value) and f"the dataset has {list(rows)}" in str(
        raised.value
    )
    assert not out.exists()


def test_sft_refuses_unpaired_kto_data_which_holds_undesirable_completions():
    kto_rows = Dataset.from_dict({"prompt": ["a", "a"], "completion": [" good", " bad"], "label": [True, False]})
    with pytest.raises(ValueError, match=r"`trl-decpo sft` got unpaired KTO data .*label True.*`trl-decpo kto`"):
        to_trainer(kto_rows, "sft")
