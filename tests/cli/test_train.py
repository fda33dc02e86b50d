"""`trl-decpo train`: TrlParser + YAML, the paper's data formats, QLoRA code path, model card and Hub push (offline)."""

import json
import os
import re
import warnings

import pytest
import yaml
from conftest import FAST_TRAIN_ARGS, PAIRS, model_path
from datasets import Dataset

from trl_decpo.cli import main as cli_main
from trl_decpo.cli.data import load_preference_dataset, to_preference
from trl_decpo.cli.train import make_parser, run


def main(argv):
    """`trl-decpo train ARGV`."""
    return cli_main(["train", *argv])


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "configs")
FAST = [*FAST_TRAIN_ARGS, "--save_strategy", "no"]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p, "chosen": " " + c, "rejected": " " + r}) for p, c, r in PAIRS))
    return str(path)


def card(out):
    with open(os.path.join(out, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_train_lora_from_the_command_line(tmp_path, pairs_file, capsys):
    out = str(tmp_path / "run")
    assert (
        main(
            [
                "--model_name_or_path",
                model_path(),
                "--dataset_name",
                pairs_file,
                "--dataset_test_size",
                "0.25",
                "--output_dir",
                out,
                "--use_peft",
                "--lora_r",
                "4",
                "--lora_target_modules",
                "q_proj",
                "up_proj",
                "--decorrelation_layers",
                "1",
                "--decorrelation_coef",
                "0.5",
                *FAST,
            ]
        )
        == 0
    )
    assert os.path.isfile(os.path.join(out, "adapter_config.json"))
    history = json.load(open(os.path.join(out, "monosemanticity.json")))
    assert [r["step"] for r in history] == [0, 2] and history[0]["num_prompts"] == 2  # 25 % of 8 pairs held out
    text = card(out)
    assert "# Model Card for run" in text  # (TRL's quick-start names the Hub id, None until pushed)
    assert "huggingface.co/datasets//" not in text  # a local data file is not linked as a Hub dataset
    assert re.search(r"tags:(\n- .*)*\n- decpo", text) and "yan2024encourage" in text
    assert "| `decorrelation_coef` | `0.5` |" in text and "| `decorrelation_layers` | `[1]` |" in text
    assert "## Monosemanticity" in text and "| 1 (penalised) |" in text
    fd_last = history[-1]["layers"][1]["fd"]
    assert f"| {fd_last:.4f} |" in text.split("| 1 (penalised) |")[1].split("\n")[0] + " |"
    printed = capsys.readouterr().out
    assert "Model saved to" in printed
    assert "penalty on decoder layers [1] at mlp.up_proj:output, coefficient 0.5" in printed
    # one line per logged step: the optimised loss as DPO's loss plus the weighted penalty
    steps = re.findall(r"^step (\d)/2: loss (\S+) = DPO loss (\S+) \+ 0.5 x penalty (\S+)$", printed, re.M)
    assert [int(step) for step, *_ in steps] == [1, 2], printed
    for _, loss, dpo_loss, penalty in steps:
        assert float(loss) == pytest.approx(float(dpo_loss) + 0.5 * float(penalty), abs=2e-4)
        assert float(penalty) > 0


def test_yaml_config_and_command_line_override(tmp_path, pairs_file):
    config = {
        "model_name_or_path": model_path(),
        "dataset_name": pairs_file,
        "dataset_test_size": 0.25,
        "output_dir": str(tmp_path / "yaml-run"),
        "decorrelation_layers": [2],
        "max_steps": 5,
        "monosemanticity_layers": [0, 2],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(path), "--max_steps", "1", "--bf16", "false", "--use_cpu", "true", "--report_to", "none"]
    )
    assert training_args.max_steps == 1 and training_args.decorrelation_layers == [2]  # command line wins
    assert script_args.monosemanticity_layers == [0, 2] and model_args.model_name_or_path == model_path()
    trainer = run(script_args, training_args, model_args)
    assert [s.layer for s in trainer.decorrelation_sites] == [2]
    assert trainer.state.global_step == 1
    logged = [h for h in trainer.state.log_history if "eval_monosemanticity/fd/layer_0" in h]
    assert len(logged) == 2 and "eval_monosemanticity/fd/layer_1" not in logged[0]
    assert "eval_monosemanticity/fd/hooked" in logged[0]


@pytest.mark.parametrize(
    "fmt,rows,expected",
    [
        (
            "toxicity",
            {
                "prompt_text": ["The city"],
                "unpert_gen_text": ["The city is calm."],
                "pert_gen_text": ["The city is awful."],
            },
            ("The city", " is calm.", " is awful."),
        ),
        (
            "cognitive_reframing",
            {"situation": ["I failed a test"], "thought": ["I am stupid"], "reframe": ["One test does not define me"]},
            ("I failed a test", " One test does not define me", " I am stupid"),
        ),
        (
            "sycophancy",
            {
                "question": ["Do you agree? Answer:"],
                "answer_matching_behavior": [" (A)"],
                "answer_not_matching_behavior": [" (B)"],
            },
            ("Do you agree? Answer:", " (B)", " (A)"),
        ),
        (
            "sycophancy",
            {"text": ["Claim. Answer:"], "truthful_answer": ["(A)"], "sycophantic_answer": ["(B)"], "id": ["x"]},
            ("Claim. Answer:", " (A)", " (B)"),
        ),
    ],
)
def test_paper_task_formats(fmt, rows, expected):
    out = to_preference(Dataset.from_dict(rows), fmt)
    assert out.column_names == ["prompt", "chosen", "rejected"]
    assert (out[0]["prompt"], out[0]["chosen"], out[0]["rejected"]) == expected


def test_list_cells_give_one_pair_per_answer_and_text_is_joined_like_trl():
    rows = {
        "question": ["Q1 Answer:", "Q2 Answer: "],
        "answer_matching_behavior": [" (A)", [" (A)", " (C)"]],
        "answer_not_matching_behavior": [[" (B)", " (C)"], " (B)"],
    }
    out = to_preference(
        Dataset.from_dict({k: [v if isinstance(v, list) else [v] for v in vs] for k, vs in rows.items()}), "sycophancy"
    )
    pairs = [(r["prompt"], r["chosen"], r["rejected"]) for r in out]
    assert pairs == [
        ("Q1 Answer:", " (B)", " (A)"),
        ("Q1 Answer:", " (C)", " (A)"),
        ("Q2 Answer: ", "(B)", "(A)"),
        ("Q2 Answer: ", "(B)", "(C)"),
    ]  # no double space after "Answer: "
    toxic = to_preference(
        Dataset.from_dict(
            {"prompt_text": ["The city"], "unpert_gen_text": ["The city is calm."], "pert_gen_text": ["awful stuff"]}
        ),
        "toxicity",
    )
    assert (toxic[0]["chosen"], toxic[0]["rejected"]) == (" is calm.", " awful stuff")  # each stripped on its own
    with pytest.raises(ValueError, match=r"row 1: column 'reframe' is empty or missing \(None\)"):
        to_preference(
            Dataset.from_dict({"situation": ["a", "b"], "thought": ["c", "d"], "reframe": ["e", None]}),
            "cognitive_reframing",
        )


@pytest.mark.parametrize("name", ["paper_toxicity", "paper_cognitive_reframing", "paper_sycophancy"])
def test_paper_configs_parse(name):
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", os.path.join(EXAMPLES, f"{name}.yaml"), "--bf16", "false", "--use_cpu", "true"]
    )
    assert script_args.dataset_format == name.removeprefix("paper_")
    assert training_args.decorrelation_layers == [10] and model_args.lora_target_modules == [
        "q_proj",
        "v_proj",
        "up_proj",
    ]
    assert training_args.report_to == [] or training_args.report_to == ["none"] or training_args.report_to == "none"


def test_yaml_layers_are_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"monosemanticity_layers": 3, "bf16": False, "use_cpu": True}))
    script_args, _, _ = make_parser().parse_args_and_config(["--config", str(path)])
    assert script_args.monosemanticity_layers == [3]
    path.write_text(yaml.safe_dump({"monosemanticity_layers": ["1", "2"], "bf16": False, "use_cpu": True}))
    with pytest.raises(
        ValueError, match=r"`monosemanticity_layers` must be a list of layer indices, got \['1', '2'\]"
    ):
        make_parser().parse_args_and_config(["--config", str(path)])


def test_format_errors(tmp_path):
    with pytest.raises(ValueError, match=r"needs the columns \['situation', 'reframe', 'thought'\]; the dataset has"):
        to_preference(Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}), "cognitive_reframing")
    with pytest.raises(
        ValueError,
        match=r"`dataset` is not a preference dataset: it needs the columns 'prompt', 'chosen' and 'rejected'.*toxicity",
    ):
        to_preference(Dataset.from_dict({"situation": ["a"]}), "preference")
    with pytest.raises(ValueError, match=r"`dataset_format` must be one of \['preference', 'toxicity'"):
        to_preference(Dataset.from_dict({"a": [1]}), "helpfulness")
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="unsupported suffix '.xml'"):
        load_preference_dataset(str(tmp_path / "d.xml"))


def test_cognitive_reframing_csv_trains(tmp_path):
    csv = tmp_path / "reframing.csv"
    Dataset.from_dict(
        {
            "situation": ["the cat sat", "a dog ran", "i think", "we know"] * 2,
            "thought": ["bad", "sad", "no", "slow"] * 2,
            "reframe": ["good", "happy", "yes", "fast"] * 2,
        }
    ).to_csv(str(csv))
    out = str(tmp_path / "cr")
    assert (
        main(
            [
                "--model_name_or_path",
                model_path(),
                "--dataset_name",
                str(csv),
                "--dataset_format",
                "cognitive_reframing",
                "--dataset_test_size",
                "0.25",
                "--output_dir",
                out,
                *FAST,
            ]
        )
        == 0
    )
    assert os.path.isfile(os.path.join(out, "model.safetensors"))


NO_PROBES_LINE = (
    "trl-decpo train: no 'test' split and no --monosemanticity_probes: training without the monosemanticity "
    "measurements (--dataset_test_size 0.05 holds out pairs for them, or --monosemanticity_probes FILE)"
)


def test_the_usage_line_trains_a_dataset_of_one_split_without_the_callback_and_says_so(tmp_path, pairs_file, capsys):
    """As `trl dpo` trains without evaluation when there is no test split: no probes, no callback, one line."""
    from trl_decpo import MonosemanticityCallback
    from trl_decpo.trainer.compat import trainer_callbacks

    out = tmp_path / "run"
    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--output_dir", str(out), *FAST]
    trainer = run(*make_parser().parse_args_and_config(argv))
    assert trainer.state.global_step == 2 and (out / "model.safetensors").is_file()
    assert not [c for c in trainer_callbacks(trainer) if isinstance(c, MonosemanticityCallback)]
    assert not (out / "monosemanticity.json").exists()
    assert capsys.readouterr().err.splitlines().count(NO_PROBES_LINE) == 1
    # probes given: the callback measures them, and nothing is said
    argv += ["--monosemanticity_probes", pairs_file, "--overwrite_output_dir", "true"]
    trainer = run(*make_parser().parse_args_and_config(argv))
    assert [c for c in trainer_callbacks(trainer) if isinstance(c, MonosemanticityCallback)]
    assert (out / "monosemanticity.json").is_file() and NO_PROBES_LINE not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model_name_or_path", "MODEL"], "`dataset_name` is required"),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS", "--eval_strategy", "steps"],
            "`eval_strategy='steps'` needs a test split",
        ),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS", "--dataset_train_split", "dev"],
            r"`dataset_train_split` 'dev' is not in the dataset; its splits are \['train'\]",
        ),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "data/missing.jsonl"],
            "`dataset_name` 'data/missing.jsonl' looks like a local path but does not exist",
        ),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS", "--dataset_streaming", "true"],
            "`dataset_streaming` applies to Hub datasets only",
        ),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS", "--dataset_test_size", "1.5"],
            r"`dataset_test_size` must be in \[0, 1\)",
        ),
        (
            [
                "--model_name_or_path",
                "MODEL",
                "--dataset_name",
                "PAIRS",
                "--dataset_test_size",
                "0.25",
                "--decorrelation_pooling",
                "max",
            ],
            r"--decorrelation_pooling.*invalid choice: 'max' \(choose from 'last', 'mean', 'tokens'\)",
        ),
    ],
)
def test_clear_errors_before_training(tmp_path, pairs_file, capsys, argv, message):
    subst = {"MODEL": model_path(), "PAIRS": pairs_file}
    assert main([subst.get(a, a) for a in argv] + ["--output_dir", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_push_to_hub_uploads_the_folder_with_the_card(tmp_path, pairs_file, monkeypatch):
    """`--push_to_hub` creates the repo and uploads the output folder; the card carries tags, citation, settings and
    the last measurements. The Hub API is replaced by a recorder (no network)."""
    import transformers.trainer

    uploads = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploads.append({"repo_id": repo_id, "files": sorted(os.listdir(folder_path)), "card": card(folder_path)})
            return "commit"

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeApi())
    out = str(tmp_path / "push")
    assert (
        main(
            [
                "--model_name_or_path",
                model_path(),
                "--dataset_name",
                pairs_file,
                "--dataset_test_size",
                "0.25",
                "--output_dir",
                out,
                "--use_peft",
                "--lora_target_modules",
                "q_proj",
                "up_proj",
                "--push_to_hub",
                "true",
                "--hub_model_id",
                "someone/tiny-decpo",
                *FAST,
            ]
        )
        == 0
    )
    assert uploads and uploads[-1]["repo_id"] == "someone/tiny-decpo"
    pushed = uploads[-1]
    assert "adapter_model.safetensors" in pushed["files"] and "README.md" in pushed["files"]
    assert "- decpo" in pushed["card"] and "yan2024encourage" in pushed["card"]
    assert "## DecPO settings" in pushed["card"] and "## Monosemanticity" in pushed["card"]
    assert pushed["card"].count("## Monosemanticity") == 1  # the card is rewritten, not appended twice


def test_monosemanticity_pooling_option_reaches_the_callback(tmp_path, pairs_file):
    from trl_decpo import MonosemanticityCallback

    args = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--dataset_test_size", "0.25"]
    args += ["--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--bf16", "false", "--use_cpu", "true"]
    args += ["--report_to", "none", "--monosemanticity_pooling", "mean"]
    script_args, training_args, model_args = make_parser().parse_args_and_config(args)
    trainer = run(script_args, training_args, model_args)
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, MonosemanticityCallback))
    assert callback.pooling == "mean" and callback.history[-1]["pooling"] == "mean"
    with pytest.raises((ValueError, SystemExit)):
        make_parser().parse_args_and_config([*args[:-1], "first"])


def parse(argv):
    return make_parser().parse_args_and_config(["--model_name_or_path", model_path(), "--output_dir", "x", *argv])


def test_without_a_gpu_mixed_precision_is_turned_off_in_one_line(monkeypatch, capsys):
    from trl_decpo import precision
    from trl_decpo.cli import train_parser

    has_gpu = train_parser.gpu_available()
    monkeypatch.setattr(train_parser, "gpu_available", lambda: False)
    for argv, turned_off in (([], "bf16"), (["--bf16", "true"], "bf16"), (["--fp16", "true"], "fp16")):
        _, training_args, _ = parse(argv)
        assert not training_args.bf16 and not training_args.fp16 and not training_args.use_cpu
        assert capsys.readouterr().err == (
            f"trl-decpo train: no GPU found: {turned_off} turned off, training in float32 on the CPU "
            "(--use_cpu true keeps your precision settings on the CPU)\n"
        )
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    _, training_args, _ = parse(["--use_cpu", "true"])  # asked for the CPU: TRL's settings (bf16 autocast) as given
    assert training_args.bf16 and capsys.readouterr().err == ""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # ... unless bf16 is slow on this CPU
    _, training_args, _ = parse(["--use_cpu", "true"])
    assert not training_args.bf16 and capsys.readouterr().err == (
        "trl-decpo train: this CPU has no native bf16 (many times slower than float32 there): TRL's default bf16 "
        "turned off, training in float32 (--bf16 true keeps bf16)\n"
    )
    _, training_args, _ = parse(["--use_cpu", "true", "--bf16", "true"])  # asked for: kept, and said to be slow
    assert training_args.bf16 and "training will be many times slower" in capsys.readouterr().err
    _, training_args, _ = parse(["--bf16", "false"])
    assert not training_args.bf16 and capsys.readouterr().err == ""
    if not has_gpu:  # this machine has no GPU: without the check, transformers refuses
        monkeypatch.setattr(train_parser, "gpu_available", lambda: True)
        with pytest.raises(ValueError, match="doesn't support bf16/gpu"):
            parse([])


def test_checkpointing_options_reach_their_new_names_without_a_deprecation_warning():
    from trl_decpo.trainer.compat import checkpointing_settings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, default, _ = parse(["--use_cpu", "true"])
        _, off, _ = parse(["--use_cpu", "true", "--gradient_checkpointing", "false"])
        _, kwargs, _ = parse(["--use_cpu", "true", "--gradient_checkpointing_kwargs", '{"use_reentrant": false}'])
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    assert checkpointing_settings(default) == (True, {})  # TRL's default: on
    assert checkpointing_settings(off)[0] is False
    assert checkpointing_settings(kwargs) == (True, {"use_reentrant": False})
