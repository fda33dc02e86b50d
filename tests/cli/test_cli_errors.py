"""Errors a person can act on: one line naming what was wrong and what to do, before anything loads or is written.

A missing local path is called missing; a Hub id that cannot be had (offline mode and not in the cache, or the Hub
unreachable) fails at once naming the offline variables; an unknown option or an invalid choice shows the command's
short usage and the bad value; `train --help` lists the DecPO options first, `--help-all` every option."""

import json

import pytest
from conftest import FAST_TRAIN_ARGS, PAIRS, model_path

from trl_decpo.cli import main, sources


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p, "chosen": " " + c, "rejected": " " + r}) for p, c, r in PAIRS))
    return str(path)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("the cat sat\na dog ran\n")
    return str(path)


@pytest.fixture
def online_without_network(monkeypatch):
    """Offline mode off, and a Hub endpoint that refuses connections at once (a closed local port)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(sources, "_PROBES", {})


def error_line(capsys, argv) -> str:
    """Run `trl-decpo ARGV`, which must fail with status 2 and print exactly one line on stderr; that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("trl-decpo train: no GPU found")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_local_model_path_that_does_not_exist(tmp_path, pairs_file, prompts_file, capsys):
    missing = str(tmp_path / "runs" / "nowhere" / "model")
    out = tmp_path / "out"
    line = error_line(capsys, ["train", "--model_name_or_path", missing, "--dataset_name", pairs_file,
                               "--output_dir", str(out), *FAST_TRAIN_ARGS])  # fmt: skip
    assert (
        line
        == f"trl-decpo train: error: `model_name_or_path` {missing!r} does not exist: no such folder (from {tmp_path.cwd()})"
    )
    line = error_line(capsys, ["measure", "./nowhere/model", "--prompts", prompts_file, "--output_dir", str(out)])
    assert "model './nowhere/model' does not exist" in line and "Repo id" not in line
    assert not out.exists()  # nothing written


def test_a_hub_id_offline_fails_at_once_naming_the_variables(tmp_path, pairs_file, prompts_file, capsys):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the suite runs offline (conftest)
    out = tmp_path / "out"
    for argv in (
        ["train", "--model_name_or_path", "someone/no-such-model", "--dataset_name", pairs_file,
         "--output_dir", str(out), *FAST_TRAIN_ARGS],
        ["measure", "someone/no-such-model", "--prompts", prompts_file, "--output_dir", str(out)],
        ["compare", model_path(), "someone/no-such-model", "--prompts", prompts_file],
    ):  # fmt: skip
        line = error_line(capsys, argv)
        assert "'someone/no-such-model' does not exist as a local folder" in line
        assert "not in the Hugging Face cache" in line and "HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1" in line
    assert not out.exists()


def test_a_hub_dataset_offline_names_the_variables(tmp_path, capsys):
    line = error_line(capsys, ["train", "--model_name_or_path", model_path(), "--dataset_name", "someone/no-such-data",
                               "--output_dir", str(tmp_path / "out"), *FAST_TRAIN_ARGS])  # fmt: skip
    assert line.startswith("trl-decpo train: error: `dataset_name` 'someone/no-such-data' does not exist")
    assert "HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1" in line


def test_an_unreachable_hub_fails_at_once(online_without_network, prompts_file, capsys, monkeypatch):
    line = error_line(capsys, ["measure", "someone/no-such-model", "--prompts", prompts_file])
    assert "the Hub (http://127.0.0.1:9) cannot be reached (ConnectError" in line
    assert "not in the cache either" in line and "HF_HUB_OFFLINE=1" in line
    monkeypatch.setattr(sources, "in_hub_cache", lambda repo_id, revision=None: True)
    with pytest.raises(ValueError, match="it is in the cache: set HF_HUB_OFFLINE=1 to load it from there"):
        sources.check_model_source("someone/no-such-model", "model")


def test_what_the_checks_let_through(monkeypatch):
    sources.check_model_source(model_path(), "model")  # a local folder
    monkeypatch.setattr(sources, "in_hub_cache", lambda repo_id, revision=None: True)
    sources.check_model_source("someone/cached-model", "model")  # offline, in the cache
    assert [sources.is_hub_id(name) for name in ("gpt2", "org/name", "a/b/c", "./x", "/abs/path", "~/x")] == [
        *(True, True),
        *(False, False, False, False),
    ]


def test_an_unknown_option_shows_the_short_usage_and_the_option(capsys, prompts_file):
    assert main(["train", "--model_name_or_path", "M", "--decorelation_coef", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "usage: trl-decpo train --model_name_or_path MODEL --dataset_name DATASET --output_dir DIR [OPTIONS] "
        "[--config FILE.yaml]",
        "trl-decpo train: error: unrecognized arguments: --decorelation_coef 2 (did you mean --decorrelation_coef?)",
    ]
    assert main(["measure", model_path(), "--prompts", prompts_file, "--batchsize", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: trl-decpo measure MODEL --prompts PROMPTS") and len(err) == 2
    assert err[1] == "trl-decpo measure: error: unrecognized arguments: --batchsize 2 (did you mean --batch_size?)"


def test_an_invalid_choice_is_two_lines(capsys):
    assert main(["train", "--decorrelation_pooling", "max"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("usage: trl-decpo train ")
    assert err[1].endswith("invalid choice: 'max' (choose from 'last', 'mean', 'tokens')")
    assert main(["weigh", "MODEL"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "invalid choice: 'weigh'" in err[1]


def test_train_help_lists_the_decpo_options_first_and_help_all_lists_every_option(capsys):
    assert main(["train", "--help"]) == 0
    short = capsys.readouterr().out
    sections = [line for line in short.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert sections == [
        "help:",
        "DecPO options (DecPOConfig):",
        "trainer, data, probes and the output folder:",
        "most used options of `trl dpo`:",
    ]
    option = "\n  --{} ".format  # an option's own line, not the usage line
    assert short.index(option("decorrelation_coef")) < short.index(option("dataset_name"))
    assert short.index(option("dataset_name")) < short.index(option("model_name_or_path"))
    assert "--use_cpu" in short and "--lr_scheduler_type" not in short and "--help-all" in short
    assert main(["train", "--help-all"]) == 0
    full = capsys.readouterr().out
    assert full.index(option("decorrelation_coef")) < full.index(option("lr_scheduler_type"))
    assert len(full.splitlines()) > 3 * len(short.splitlines()) and len(short.splitlines()) < 300


def test_measure_leaves_no_output_folder_when_the_model_has_no_tokenizer(tmp_path, prompts_file, capsys):
    from conftest import make_model

    folder = tmp_path / "weights_only"
    make_model().save_pretrained(folder)
    line = error_line(capsys, ["measure", str(folder), "--prompts", prompts_file, "--output_dir", str(tmp_path / "o")])
    assert "no tokenizer files" in line
    assert not (tmp_path / "o").exists()


def test_a_refused_train_removes_the_output_folders_it_created(tmp_path, pairs_file, capsys):
    """transformers and TRL create `output_dir` while building the trainer, before the layer is checked."""
    argv = ["train", "--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--dataset_test_size", "0.25"]
    argv += [*FAST_TRAIN_ARGS, "--decorrelation_layers", "99"]
    line = error_line(capsys, [*argv, "--output_dir", str(tmp_path / "new" / "run")])
    assert "`decorrelation_layers` entry 99 is out of range" in line
    assert not (tmp_path / "new").exists()  # the folder, and the parent created for it
    (tmp_path / "empty").mkdir()  # a folder that was there before stays, empty as it was
    error_line(capsys, [*argv, "--output_dir", str(tmp_path / "empty")])
    assert (tmp_path / "empty").is_dir()


def test_a_failed_measure_removes_only_the_empty_output_folder_it_created(tmp_path, prompts_file, capsys):
    argv = ["measure", model_path(), "--prompts", prompts_file, "--layers", "99"]
    line = error_line(capsys, [*argv, "--output_dir", str(tmp_path / "new" / "out")])
    assert "`layers` entry 99 is out of range" in line
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    error_line(capsys, [*argv, "--output_dir", str(tmp_path / "kept" / "out")])
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "out").exists()


def test_removed_if_left_empty_never_removes_what_existed_or_holds_anything(tmp_path):
    from trl_decpo.cli.output_dir import removed_if_left_empty

    class Failed(Exception):
        pass

    def fail_after(make):
        with pytest.raises(Failed), removed_if_left_empty(str(tmp_path / "a" / "b"), str(tmp_path / "c"), None):
            make()
            raise Failed

    fail_after(lambda: (tmp_path / "a" / "b").mkdir(parents=True))
    assert not (tmp_path / "a").exists()
    fail_after(lambda: ((tmp_path / "a" / "b").mkdir(parents=True), (tmp_path / "a" / "b" / "f").write_text("x")))
    assert (tmp_path / "a" / "b" / "f").is_file()  # something was written: kept
    (tmp_path / "c").mkdir()
    fail_after(lambda: None)
    assert (tmp_path / "c").is_dir() and (tmp_path / "a" / "b" / "f").is_file()  # there before: kept
    with removed_if_left_empty(str(tmp_path / "d")):  # no failure: nothing removed
        (tmp_path / "d").mkdir()
    assert (tmp_path / "d").is_dir()
