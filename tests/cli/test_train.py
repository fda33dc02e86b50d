"""`trl-decpo dpo` (trl_decpo/cli/scripts/dpo.py): TrlParser + YAML, the paper's data formats, model card and Hub push
(offline), precision on a machine without a GPU, and the launch through accelerate. The script's `main` runs
in-process; one test launches the command end to end."""

import json
import os
import re
import subprocess
import sys
import warnings

import pytest
import yaml
from datasets import Dataset

from tests.helpers import FAST_TRAIN_ARGS, PAIRS, model_path
from trl_decpo import data, precision
from trl_decpo.cli import main as cli_main
from trl_decpo.cli.scripts import common, dpo


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "configs")
FAST = [*FAST_TRAIN_ARGS, "--save_strategy", "no"]


def parse(argv, script=dpo):
    return script.make_parser().parse_args_and_config(argv)


def train(argv, script=dpo):
    """`trl-decpo NAME ARGV` in this process (what the launched script does); returns the trainer."""
    return script.main(*parse(argv, script))


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p, "chosen": " " + c, "rejected": " " + r}) for p, c, r in PAIRS))
    return str(path)


def card(out):
    with open(os.path.join(out, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_dpo_with_lora(tmp_path, pairs_file, capsys):
    out = str(tmp_path / "run")
    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--test_split_size", "0.25"]
    argv += ["--output_dir", out, "--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "up_proj"]
    train([*argv, "--decorrelation_layers", "1", "--decorrelation_coef", "0.5", *FAST])
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
    assert f"Model saved to {out}" in printed
    assert "trl-decpo dpo: penalty on decoder layers [1] at mlp.up_proj:output, coefficient 0.5" in printed
    # one line per logged step: the optimised loss as DPO's loss plus the weighted penalty
    steps = re.findall(r"^step (\d)/2: loss (\S+) = DPO loss (\S+) \+ 0.5 x penalty (\S+)$", printed, re.M)
    assert [int(step) for step, *_ in steps] == [1, 2], printed
    for _, loss, dpo_loss, penalty in steps:
        assert float(loss) == pytest.approx(float(dpo_loss) + 0.5 * float(penalty), abs=2e-4)
        assert float(penalty) > 0
    next_steps = printed.split("Next steps:\n")[1].splitlines()
    assert next_steps[0].endswith(f"trl-decpo compare {model_path()} {out} --prompts PROMPTS")
    assert next_steps[1].endswith(f"trl-decpo evaluate {model_path()} {out} --dataset PAIRS")


def test_yaml_config_and_command_line_override(tmp_path, pairs_file):
    config = {
        "model_name_or_path": model_path(),
        "dataset_name": pairs_file,
        "test_split_size": 0.25,
        "output_dir": str(tmp_path / "yaml-run"),
        "decorrelation_layers": [2],
        "max_steps": 5,
        "monosemanticity_layers": [0, 2],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    args = parse(
        ["--config", str(path), "--max_steps", "1", "--bf16", "false", "--use_cpu", "true", "--report_to", "none"]
    )
    script_args, training_args, model_args, dataset_args = args
    assert training_args.max_steps == 1 and training_args.decorrelation_layers == [2]  # command line wins
    assert script_args.monosemanticity_layers == [0, 2] and model_args.model_name_or_path == model_path()
    assert dataset_args.test_split_size == 0.25
    trainer = dpo.main(*args)
    assert [s.layer for s in trainer.decorrelation_sites] == [2]
    assert trainer.state.global_step == 1
    logged = [h for h in trainer.state.log_history if "eval_monosemanticity/fd/layer_0" in h]
    assert len(logged) == 2 and "eval_monosemanticity/fd/layer_1" not in logged[0]
    assert "eval_monosemanticity/fd/hooked" in logged[0]


def test_a_dataset_mixture_from_the_yaml(tmp_path, pairs_file):
    """TRL's dataset mixtures (`datasets:` in the YAML, `trl.get_dataset`), held out with the run's seed."""
    config = {"datasets": [{"path": "json", "data_files": pairs_file}] * 2, "test_split_size": 0.25}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["--config", str(path), "--model_name_or_path", model_path(), "--output_dir", str(tmp_path / "mix"), *FAST]
    trainer = train(argv)
    assert len(trainer.train_dataset) == 12 and len(trainer.eval_dataset) == 4  # 2 x 8 pairs, a quarter held out
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "unused")
    held_out = [common.prepare("dpo", *parse(argv))[2]["prompt"] for _ in range(2)]
    assert held_out[0] == held_out[1]  # the same pairs held out every time


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
    out = data.to_pairs(Dataset.from_dict(rows), "dpo", fmt, "`trl-decpo dpo`")
    assert out.column_names == ["prompt", "chosen", "rejected"]
    assert (out[0]["prompt"], out[0]["chosen"], out[0]["rejected"]) == expected


def test_list_cells_give_one_pair_per_answer_and_text_is_joined_like_trl():
    rows = {
        "question": ["Q1 Answer:", "Q2 Answer: "],
        "answer_matching_behavior": [" (A)", [" (A)", " (C)"]],
        "answer_not_matching_behavior": [[" (B)", " (C)"], " (B)"],
    }
    out = data.task_pairs(
        Dataset.from_dict({k: [v if isinstance(v, list) else [v] for v in vs] for k, vs in rows.items()}), "sycophancy"
    )
    pairs = [(r["prompt"], r["chosen"], r["rejected"]) for r in out]
    assert pairs == [
        ("Q1 Answer:", " (B)", " (A)"),
        ("Q1 Answer:", " (C)", " (A)"),
        ("Q2 Answer: ", "(B)", "(A)"),
        ("Q2 Answer: ", "(B)", "(C)"),
    ]  # no double space after "Answer: "
    toxic = data.task_pairs(
        Dataset.from_dict(
            {"prompt_text": ["The city"], "unpert_gen_text": ["The city is calm."], "pert_gen_text": ["awful stuff"]}
        ),
        "toxicity",
    )
    assert (toxic[0]["chosen"], toxic[0]["rejected"]) == (" is calm.", " awful stuff")  # each stripped on its own
    with pytest.raises(ValueError, match=r"row 1: column 'reframe' is empty or missing \(None\)"):
        data.task_pairs(
            Dataset.from_dict({"situation": ["a", "b"], "thought": ["c", "d"], "reframe": ["e", None]}),
            "cognitive_reframing",
        )


@pytest.mark.parametrize("name", ["paper_toxicity", "paper_cognitive_reframing", "paper_sycophancy"])
def test_paper_configs_parse(name):
    script_args, training_args, model_args, dataset_args = parse(
        ["--config", os.path.join(EXAMPLES, f"{name}.yaml"), "--bf16", "false", "--use_cpu", "true"]
    )
    assert script_args.dataset_format == name.removeprefix("paper_") and 0 < dataset_args.test_split_size < 1
    assert training_args.decorrelation_layers == [10]
    assert model_args.lora_target_modules == ["q_proj", "v_proj", "up_proj"]
    assert training_args.report_to == [] or training_args.report_to == ["none"] or training_args.report_to == "none"


def test_yaml_layers_are_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"monosemanticity_layers": 3, "bf16": False, "use_cpu": True}))
    assert parse(["--config", str(path)])[0].monosemanticity_layers == [3]
    path.write_text(yaml.safe_dump({"monosemanticity_layers": ["1", "2"], "bf16": False, "use_cpu": True}))
    with pytest.raises(
        ValueError, match=r"`monosemanticity_layers` must be a list of layer indices, got \['1', '2'\]"
    ):
        parse(["--config", str(path)])


def test_format_errors(tmp_path):
    with pytest.raises(ValueError, match=r"needs the columns \['situation', 'reframe', 'thought'\]; the dataset has"):
        data.to_pairs(
            Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}), "dpo", "cognitive_reframing"
        )
    with pytest.raises(
        ValueError,
        match=r"`trl-decpo dpo` needs the columns 'prompt', 'chosen' and 'rejected'.*the dataset has \['situation'\]"
        r".*toxicity",
    ):
        data.to_pairs(Dataset.from_dict({"situation": ["a"]}), "dpo", who="`trl-decpo dpo`")
    with pytest.raises(ValueError, match=r"`dataset_format` must be one of \['preference', 'toxicity'"):
        common.DecPOScriptArguments(dataset_format="helpfulness")
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="unsupported suffix '.xml'"):
        data.load_named(str(tmp_path / "d.xml"))


def test_cognitive_reframing_csv_trains(tmp_path):
    csv = tmp_path / "reframing.csv"
    Dataset.from_dict(
        {
            "situation": ["the cat sat", "a dog ran", "i think", "we know"] * 2,
            "thought": ["bad", "sad", "no", "slow"] * 2,
            "reframe": ["good", "happy", "yes", "fast"] * 2,
        }
    ).to_csv(str(csv))
    out = tmp_path / "cr"
    argv = [
        "--model_name_or_path",
        model_path(),
        "--dataset_name",
        str(csv),
        "--dataset_format",
        "cognitive_reframing",
    ]
    trainer = train([*argv, "--test_split_size", "0.25", "--output_dir", str(out), *FAST])
    assert (out / "model.safetensors").is_file() and len(trainer.eval_dataset) == 2


NO_PROBES_LINE = (
    "trl-decpo dpo: no 'test' split and no --monosemanticity_probes: training without the monosemanticity "
    "measurements (--test_split_size 0.05 holds out pairs for them, or --monosemanticity_probes FILE)"
)


def test_a_dataset_of_one_split_trains_without_the_callback_and_says_so(tmp_path, pairs_file, capsys):
    """As `trl dpo` trains without evaluation when there is no test split: no probes, no callback, one line."""
    from trl_decpo import MonosemanticityCallback
    from trl_decpo.compat import trainer_callbacks

    out = tmp_path / "run"
    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--output_dir", str(out), *FAST]
    trainer = train(argv)
    assert trainer.state.global_step == 2 and (out / "model.safetensors").is_file()
    assert not [c for c in trainer_callbacks(trainer) if isinstance(c, MonosemanticityCallback)]
    assert not (out / "monosemanticity.json").exists()
    assert capsys.readouterr().err.splitlines().count(NO_PROBES_LINE) == 1
    # probes given: the callback measures them, and nothing is said
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "probed")
    trainer = train([*argv, "--monosemanticity_probes", pairs_file])
    assert [c for c in trainer_callbacks(trainer) if isinstance(c, MonosemanticityCallback)]
    assert (tmp_path / "probed" / "monosemanticity.json").is_file() and NO_PROBES_LINE not in capsys.readouterr().err


def error_line(capsys, argv) -> str:
    """Run `trl-decpo ARGV`, which must stop with status 2 before launching anything, printing exactly one line."""
    assert cli_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "no GPU found" not in line]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model_name_or_path", "MODEL"], r"`dataset_name` is required \(or `datasets:` in the --config file\)"),
        (["--dataset_name", "PAIRS"], "`model_name_or_path` is required"),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "data/missing.jsonl"],
            "`dataset_name` 'data/missing.jsonl' looks like a local path but does not exist",
        ),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS", "--monosemanticity_max_samples", "1"],
            "`monosemanticity_max_samples` must be an integer >= 2, got 1",
        ),
        (
            ["--model_name_or_path", "MODEL", "--dataset_name", "PAIRS", "--accelerate_config", "nowhere"],
            "Accelerate config nowhere is neither a file nor a valid config in the `trl` package",
        ),
    ],
)
def test_one_line_errors_before_launching(tmp_path, pairs_file, capsys, monkeypatch, argv, message):
    import accelerate.commands.launch

    monkeypatch.setattr(accelerate.commands.launch, "launch_command", lambda args: pytest.fail("launched"))
    subst = {"MODEL": model_path(), "PAIRS": pairs_file}
    out = tmp_path / "x"
    line = error_line(capsys, ["dpo", *[subst.get(a, a) for a in argv], "--output_dir", str(out), *FAST])
    assert line.startswith("trl-decpo dpo: error: ") and re.search(message, line), line
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--eval_strategy", "steps"], "`eval_strategy='steps'` needs a test split"),
        (
            ["--dataset_train_split", "dev"],
            r"`dataset_train_split` 'dev' is not in the dataset; its splits are \['train'\]",
        ),
        (["--decorrelation_layers", "99"], "`decorrelation_layers` entry 99 is out of range"),
    ],
)
def test_one_line_errors_of_the_launched_script(tmp_path, pairs_file, capsys, monkeypatch, argv, message):
    """What only the data or the model can tell: the script (as launched: `python dpo.py ARGV`) says it in one line,
    exit status 2, and writes no file (the trainer may have created an empty `output_dir`)."""
    out = tmp_path / "new" / "x"
    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--output_dir", str(out), *FAST, *argv]
    monkeypatch.setattr(sys, "argv", ["dpo.py", *argv])
    with pytest.raises(SystemExit) as done:
        common.run_script(dpo.make_parser(), dpo.main)
    assert done.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("trl-decpo dpo: error: ") and re.search(message, err[0]), err
    assert not [path for path in (tmp_path / "new").rglob("*") if path.is_file()]


def test_unknown_options_and_invalid_choices_show_the_usage(pairs_file, capsys, monkeypatch):
    import accelerate.commands.launch

    monkeypatch.setattr(accelerate.commands.launch, "launch_command", lambda args: pytest.fail("launched"))
    usage = (
        "usage: trl-decpo dpo --model_name_or_path MODEL --dataset_name DATASET --output_dir DIR [OPTIONS] "
        "[--config FILE.yaml] [--accelerate_config NAME_OR_FILE]"
    )
    assert cli_main(["dpo", "--model_name_or_path", "M", "--decorelation_coef", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        usage,
        "trl-decpo dpo: error: unrecognized arguments: --decorelation_coef 2 (did you mean --decorrelation_coef?)",
    ]
    assert cli_main(["dpo", "--num_processes", "1", "--num_proceses", "2", "--multi_gpu"]) == 2  # accelerate's
    assert capsys.readouterr().err.splitlines()[1] == (
        "trl-decpo dpo: error: unrecognized arguments: --num_proceses 2 (did you mean --num_processes?)"
    )
    assert cli_main(["dpo", "--decorrelation_pooling", "max"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == usage and len(err) == 2
    assert err[1].endswith("invalid choice: 'max' (choose from 'last', 'mean', 'tokens')")


def test_launch_through_accelerate_with_a_trl_preset(tmp_path, pairs_file, monkeypatch):
    """`--accelerate_config multi_gpu` is TRL's preset file, given to `accelerate launch` with the options accelerate
    takes; the script gets the rest, and the precision the command chose without a GPU."""
    import accelerate.commands.launch
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    launched = []
    monkeypatch.setattr(accelerate.commands.launch, "launch_command", launched.append)
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--output_dir", str(tmp_path / "o")]
    assert (
        cli_main(["dpo", *argv, "--accelerate_config", "multi_gpu", "--num_processes", "2", "--max_steps", "3"]) == 0
    )
    (args,) = launched
    preset = resolve_accelerate_config_argument(["--accelerate_config", "multi_gpu"])[1]
    assert preset.endswith(os.path.join("trl", "accelerate_configs", "multi_gpu.yaml"))
    assert (args.config_file, args.num_processes) == (preset, 2)
    assert args.training_script == dpo.__file__ and args.training_script.endswith("trl_decpo/cli/scripts/dpo.py")
    assert args.training_script_args == [*argv, "--max_steps", "3", "--bf16", "false", "--fp16", "false"]  # no GPU
    config = tmp_path / "accelerate.yaml"  # or a file of one's own
    config.write_text("compute_environment: LOCAL_MACHINE\n")
    assert cli_main(["dpo", *argv, "--accelerate_config", str(config)]) == 0
    assert launched[-1].config_file == str(config)
    assert not (tmp_path / "o").exists()  # nothing ran

    # in the YAML file: accelerate's options go to it, the others to the script, which reads the file again
    config.write_text(yaml.safe_dump({"accelerate_config": "multi_gpu", "num_processes": 3, "max_steps": 4}))
    assert cli_main(["dpo", *argv, "--config", str(config)]) == 0
    args = launched[-1]
    assert (args.config_file, args.num_processes) == (preset, 3)
    assert args.training_script_args == [*argv, "--config", str(config), "--bf16", "false", "--fp16", "false"]
    monkeypatch.setattr(sys, "argv", [args.training_script, *args.training_script_args])
    common.run_script(dpo.make_parser(), lambda *parsed: launched.append(parsed))
    assert launched[-1][1].max_steps == 4 and launched[-1][0].dataset_name == pairs_file

    def failed(args):  # the launched script stopped (it printed its one line): its exit status is the command's
        raise subprocess.CalledProcessError(2, [args.training_script])

    monkeypatch.setattr(accelerate.commands.launch, "launch_command", failed)
    assert cli_main(["dpo", *argv]) == 2


def test_the_command_launches_the_script_end_to_end(tmp_path, pairs_file):
    """`trl-decpo dpo` as a user runs it: the console script launches trl_decpo/cli/scripts/dpo.py through accelerate."""
    out = tmp_path / "run"
    script = os.path.join(os.path.dirname(sys.executable), "trl-decpo")
    argv = ["dpo", "--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--test_split_size", "0.25"]
    argv += ["--output_dir", str(out), "--decorrelation_layers", "1", *FAST, "--disable_tqdm", "true"]
    done = subprocess.run([script, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(re.findall(r"^step \d/2: loss \S+ = DPO loss \S+ \+ 1 x penalty \S+$", done.stdout, re.M)) == 2
    assert f"Model saved to {out}" in done.stdout and "Next steps:" in done.stdout
    assert (out / "model.safetensors").is_file() and (out / "monosemanticity.json").is_file()


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
    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--test_split_size", "0.25"]
    argv += ["--output_dir", str(tmp_path / "push"), "--use_peft", "--lora_target_modules", "q_proj", "up_proj"]
    train([*argv, "--push_to_hub", "true", "--hub_model_id", "someone/tiny-decpo", *FAST])
    assert uploads and uploads[-1]["repo_id"] == "someone/tiny-decpo"
    pushed = uploads[-1]
    assert "adapter_model.safetensors" in pushed["files"] and "README.md" in pushed["files"]
    assert "- decpo" in pushed["card"] and "yan2024encourage" in pushed["card"]
    assert "## DecPO settings" in pushed["card"] and "## Monosemanticity" in pushed["card"]
    assert pushed["card"].count("## Monosemanticity") == 1  # the card is rewritten, not appended twice


def test_monosemanticity_pooling_option_reaches_the_callback(tmp_path, pairs_file):
    from trl_decpo import MonosemanticityCallback

    args = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--test_split_size", "0.25"]
    args += ["--output_dir", str(tmp_path / "run"), *FAST, "--max_steps", "1", "--monosemanticity_pooling", "mean"]
    trainer = train(args)
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, MonosemanticityCallback))
    assert callback.pooling == "mean" and callback.history[-1]["pooling"] == "mean"
    with pytest.raises((ValueError, SystemExit)):
        parse([*args[:-1], "first"])


def parse_precision(argv):
    parser = dpo.make_parser()
    _, training_args, _, _ = parser.parse_args_and_config(
        ["--model_name_or_path", model_path(), "--output_dir", "x", *argv]
    )
    return training_args, parser.precision_args


def test_without_a_gpu_mixed_precision_is_turned_off_in_one_line(monkeypatch, capsys):
    has_gpu = precision.gpu_available()
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    for argv, turned_off in (([], "bf16"), (["--bf16", "true"], "bf16"), (["--fp16", "true"], "fp16")):
        training_args, forwarded = parse_precision(argv)
        assert not training_args.bf16 and not training_args.fp16 and not training_args.use_cpu
        assert forwarded == ["--bf16", "false", "--fp16", "false"]  # what the launched script is given
        assert capsys.readouterr().err == (
            f"trl-decpo dpo: no GPU found: {turned_off} turned off, training in float32 on the CPU "
            "(--use_cpu true keeps your precision settings on the CPU)\n"
        )
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    training_args, _ = parse_precision(["--use_cpu", "true"])  # asked for the CPU: TRL's settings (bf16) as given
    assert training_args.bf16 and capsys.readouterr().err == ""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # ... unless bf16 is slow on this CPU
    training_args, forwarded = parse_precision(["--use_cpu", "true"])
    assert (
        not training_args.bf16
        and forwarded == ["--bf16", "false"]
        and capsys.readouterr().err
        == (
            "trl-decpo dpo: this CPU has no native bf16 (many times slower than float32 there): TRL's default bf16 "
            "turned off, training in float32 (--bf16 true keeps bf16)\n"
        )
    )
    training_args, forwarded = parse_precision(["--use_cpu", "true", "--bf16", "true"])  # kept, said to be slow
    assert training_args.bf16 and not forwarded and "training will be many times slower" in capsys.readouterr().err
    training_args, forwarded = parse_precision(["--bf16", "false"])
    assert not training_args.bf16 and not forwarded and capsys.readouterr().err == ""
    if not has_gpu:  # this machine has no GPU: without the check, transformers refuses
        monkeypatch.setattr(precision, "gpu_available", lambda: True)
        with pytest.raises(ValueError, match="doesn't support bf16/gpu"):
            parse_precision([])


def test_checkpointing_options_reach_their_new_names_without_a_deprecation_warning():
    from trl_decpo.compat import checkpointing_settings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default, _ = parse_precision(["--use_cpu", "true"])
        off, _ = parse_precision(["--use_cpu", "true", "--gradient_checkpointing", "false"])
        kwargs, _ = parse_precision(
            ["--use_cpu", "true", "--gradient_checkpointing_kwargs", '{"use_reentrant": false}']
        )
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    assert checkpointing_settings(default) == (True, {})  # TRL's default: on
    assert checkpointing_settings(off)[0] is False
    assert checkpointing_settings(kwargs) == (True, {"use_reentrant": False})
