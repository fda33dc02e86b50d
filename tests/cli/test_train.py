"""`trl-decpo train`: TrlParser + YAML, the paper's data formats, QLoRA code path, model card and Hub push (offline)."""

import json
import os
import re

import pytest
import yaml
from conftest import PAIRS, model_path
from datasets import Dataset

from trl_decpo.cli import main as cli_main
from trl_decpo.cli.data import load_preference_dataset, to_preference
from trl_decpo.cli.train import make_parser, run


def main(argv):
    """`trl-decpo train ARGV`."""
    return cli_main(["train", *argv])


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "configs")
FAST = [
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
    "--per_device_eval_batch_size",
    "2",
    "--bf16",
    "false",
    "--use_cpu",
    "true",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--logging_steps",
    "1",
    "--max_length",
    "32",
    "--dataloader_num_workers",
    "0",
]


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
    assert "Model saved to" in capsys.readouterr().out


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


def load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(EXAMPLES), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_qlora_example_on_a_tiny_model(tmp_path, pairs_file, capsys):
    """examples/decpo_qlora_llama2.py with its YAML (4-bit NF4 + LoRA + DecPO + non-reentrant checkpointing), only
    the model, data, precision, size and Hub options swapped for a CPU test."""
    example = load_example("decpo_qlora_llama2")
    with open(example.CONFIG) as f:
        config = yaml.safe_load(f)  # (parsing it whole needs a GPU: bf16)
    assert config["load_in_4bit"] and config["bnb_4bit_quant_type"] == "nf4" and config["use_peft"]
    assert config["lora_target_modules"] == ["q_proj", "v_proj", "up_proj"]
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) == (8, 16, 0.05)
    assert config["gradient_checkpointing"] and config["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert (config["beta"], config["bf16"], config["push_to_hub"]) == (0.1, True, True)
    assert config["decorrelation_layers"] == [10] and "Llama-2-7b" in config["model_name_or_path"]
    trainer = example.main(
        [
            "--model_name_or_path",
            model_path("llama64"),
            "--dataset_name",
            pairs_file,
            "--dataset_test_size",
            "0.25",
            "--output_dir",
            str(tmp_path / "qlora"),
            "--dtype",
            "float32",
            "--push_to_hub",
            "false",
            "--decorrelation_layers",
            "1",
            "--eval_strategy",
            "no",
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--max_steps",
            "1",
            "--bf16",
            "false",
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
        ]
    )
    up_proj = trainer.model.base_model.model.model.layers[0].mlp.up_proj
    assert hasattr(up_proj.base_layer.weight, "quant_state")  # trained through 4-bit weights
    assert trainer.state.global_step == 1
    assert any("decorrelation/penalty" in h for h in trainer.state.log_history)
    assert "1 optimizer steps in" in capsys.readouterr().out


def test_reproduce_figures_script(tmp_path):
    import torch
    from conftest import make_model, make_tokenizer

    paths = []
    for name, shift in (("base", 0.0), ("dpo", 0.05), ("decpo", 0.1)):
        model = make_model()
        with torch.no_grad():
            model.model.layers[1].mlp.up_proj.weight.add_(shift)
        model.save_pretrained(tmp_path / name)
        make_tokenizer().save_pretrained(tmp_path / name)
        paths.append(str(tmp_path / name))
    prompts = tmp_path / "p.txt"
    prompts.write_text("the cat sat\na dog ran fast\ni think so\nyes i agree\n")
    out = tmp_path / "figs"
    load_example("reproduce_figures").main([*paths, "--prompts", str(prompts), "--output-dir", str(out)])
    for name in ("fig_fd_by_depth.png", "fig_fd_relative_change.png", "fig_sparsity_difference.png", "compare.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    result = json.load(open(out / "compare.json"))
    assert list(result["measurements"]) == ["base", "dpo", "decpo"]
    fd = {n: [e["fd"] for e in m["layers"]] for n, m in result["measurements"].items()}
    assert fd["base"][0] == fd["decpo"][0] and fd["base"][1] != fd["decpo"][1]  # only layer 1 onwards changed


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


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model_name_or_path", "MODEL"], "`dataset_name` is required"),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS"],
            "the monosemanticity callback needs probe prompts",
        ),
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


def test_demo_report_says_where_decpo_is_not_better():
    demo = load_example("demo")
    rows = [
        {
            "model": "base",
            "FD layer 10": 0.04,
            "FD mean": 0.03,
            "reward margin": 0.0,
            "reward accuracy": 0.0,
            "penalty layer 10": 0.91,
        },
        {
            "model": "DPO",
            "FD layer 10": 0.05,
            "FD mean": 0.04,
            "reward margin": 0.2,
            "reward accuracy": 0.6,
            "penalty layer 10": 0.90,
        },
        {
            "model": "DecPO",
            "FD layer 10": 0.06,
            "FD mean": 0.035,
            "reward margin": 0.1,
            "reward accuracy": 0.6,
            "penalty layer 10": 0.95,
        },
    ]
    lines = "\n".join(demo.verdicts(rows, 10))
    assert "FD layer 10: DecPO 0.0600 is better than DPO 0.0500 (difference +0.0100; base 0.0400)" in lines
    assert "FD mean: DecPO 0.0350 is NOT better than DPO 0.0400" in lines
    assert "reward margin: DecPO 0.1000 is NOT better than DPO 0.2000" in lines
    assert "reward accuracy: DecPO 0.6000 is equal to DPO 0.6000" in lines
    assert "penalty layer 10: DecPO 0.9500 is NOT better than DPO 0.9000" in lines  # lower penalty is better
    assert "did not learn" not in lines  # both margins positive, accuracies above 0.5
    rows[1]["reward margin"] = -0.01
    assert "- DPO did not learn the preference on the held-out pairs" in "\n".join(demo.verdicts(rows, 10))
