"""The CLI and the file system: writes stay in --output_dir, an earlier run is resumed or refused (never clobbered
silently), and model code from a repository runs only with --trust_remote_code. Refusals come from `trl-decpo dpo`
before it launches anything; runs call the script's `main` in-process."""

import json
import os
import sys

import pytest

from tests.helpers import FAST_TRAIN_ARGS, PAIRS, custom_code_model, model_path
from trl_decpo.cli import main as cli_main
from trl_decpo.cli.scripts import dpo


def main(argv):
    """`trl-decpo dpo ARGV`: its status when it stops before launching; else the script's `main` in this process."""
    import accelerate.commands.launch

    launched = []
    original, accelerate.commands.launch.launch_command = accelerate.commands.launch.launch_command, launched.append
    try:
        status = cli_main(["dpo", *argv])
    finally:
        accelerate.commands.launch.launch_command = original
    if status or not launched:
        return status
    dpo.main(*dpo.make_parser().parse_args_and_config(launched[0].training_script_args))
    return 0


FAST = [*FAST_TRAIN_ARGS, "--monosemanticity", "false"]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working directory, a data file and the library caches (HF_HOME), each in its own folder under tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data" / "pairs.jsonl"
    data.parent.mkdir()
    data.write_text("\n".join(json.dumps({"prompt": p, "chosen": " " + c, "rejected": " " + r}) for p, c, r in PAIRS))
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    return tmp_path, str(data)


def snapshot(root, skip=()):
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in files:
            path = os.path.join(folder, name)
            found[path] = os.stat(path).st_mtime_ns
    return found


def train_argv(data, out, *extra):
    return ["--model_name_or_path", model_path(), "--dataset_name", data, "--output_dir", out, *FAST, *extra]


def test_training_writes_only_inside_output_dir(workspace):
    root, data = workspace
    out = str(root / "run")
    caches = {str(root / "hf_home")}  # the libraries' download / dataset caches, not files of the run
    before = snapshot(str(root), skip=caches)
    assert (
        main(
            train_argv(
                data,
                out,
                "--save_strategy",
                "steps",
                "--save_steps",
                "1",
                "--monosemanticity",
                "true",
                "--monosemanticity_probes",
                data,
            )
        )
        == 0
    )
    after = snapshot(str(root), skip=caches | {out})
    assert after == before, sorted(set(after) ^ set(before))
    assert os.path.isfile(os.path.join(out, "README.md")) and os.path.isdir(os.path.join(out, "checkpoint-2"))


def test_measure_writes_only_inside_output_dir(workspace):
    root, data = workspace
    out = str(root / "m")
    prompts = root / "data" / "prompts.txt"
    prompts.write_text("the cat sat\na dog ran fast\n")
    before = snapshot(str(root), skip={str(root / "hf_home")})
    assert cli_main(["measure", model_path(), "--prompts", str(prompts), "--output_dir", out, "--device", "cpu"]) == 0
    assert snapshot(str(root), skip={str(root / "hf_home"), out}) == before
    assert os.listdir(out)


def test_an_earlier_run_is_refused_or_resumed_and_the_cli_says_which(workspace, capsys):
    root, data = workspace
    out = str(root / "run")
    assert main(train_argv(data, out, "--save_strategy", "steps", "--save_steps", "1")) == 0
    weights = os.path.join(out, "model.safetensors")
    stamp = os.stat(weights).st_mtime_ns
    capsys.readouterr()

    # 1. same command again: refused before loading anything, nothing touched
    assert main(train_argv(data, out, "--save_strategy", "steps", "--save_steps", "1")) == 2
    err = capsys.readouterr().err
    assert "already holds a run with checkpoints ['checkpoint-1', 'checkpoint-2']" in err
    assert "--resume_from_checkpoint true" in err and "choose an empty `--output_dir`" in err
    assert len(err.splitlines()) == 1 and os.stat(weights).st_mtime_ns == stamp

    # 2. resume: continues from checkpoint-2 up to the new max_steps, and says so
    argv = train_argv(data, out, "--save_strategy", "steps", "--save_steps", "1", "--resume_from_checkpoint", "true")
    argv[argv.index("--max_steps") + 1] = "3"
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"trl-decpo dpo: resuming the run in {out} from checkpoint-2\n" in err
    state = json.load(open(os.path.join(out, "checkpoint-3", "trainer_state.json")))
    assert state["global_step"] == 3 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]


def test_a_folder_with_other_files_is_refused(workspace, capsys):
    root, data = workspace
    out = root / "notes"
    out.mkdir()
    (out / "my-notes.txt").write_text("mine")
    assert main(train_argv(data, str(out))) == 2
    err = capsys.readouterr().err
    assert "already holds files ['my-notes.txt']" in err and "resume" not in err
    assert (out / "my-notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--resume_from_checkpoint", "true"], "holds none"),
        (["--resume_from_checkpoint", "last"], "holds none"),
        (["--resume_from_checkpoint", "no/such/checkpoint"], "is not a checkpoint folder"),
    ],
)
def test_resume_errors(workspace, capsys, argv, message):
    root, data = workspace
    assert main(train_argv(data, str(root / "fresh"), *argv)) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["dpo", "measure"])
def test_remote_code_runs_only_with_trust_remote_code(workspace, capsys, command):
    root, data = workspace
    # a folder name per case: transformers caches the imported module by folder name for the whole process
    folder, marker = str(root / f"custom_{command}"), root / "marker.txt"
    custom_code_model(folder, marker)
    if command == "dpo":

        def run(*extra):
            argv = train_argv(data, str(root / f"out{len(extra)}"), *extra)
            argv[argv.index("--model_name_or_path") + 1] = folder
            try:
                return main(argv)
            except ValueError as err:  # the launched script's one line (tests/cli/test_train.py)
                print(err, file=sys.stderr)
                return 2
    else:

        def run(*extra):
            return cli_main(
                ["measure", folder, "--prompts", data, "--output_dir", str(root / f"m{len(extra)}"), "--device", "cpu",
                 *extra]
            )  # fmt: skip

    assert run() == 2
    assert "trust_remote_code" in capsys.readouterr().err
    assert not marker.exists()  # the folder's code never ran
    assert run("--trust_remote_code", "true") == 0
    assert marker.exists()
