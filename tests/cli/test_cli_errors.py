"""Errors a person can act on: one line naming what was wrong and what to do, before anything loads or is written.

A missing local path is called missing; a Hub id that cannot be had (offline mode and not in the cache, or the Hub
unreachable) fails at once naming the offline variables; an unknown option or an invalid choice shows the command's
short usage and the bad value (tests/cli/test_train.py for the training commands' own cases)."""

import json

import pytest

import trl_decpo.sources as sources
from tests.helpers import FAST_TRAIN_ARGS, PAIRS, model_path
from trl_decpo.cli import main
from trl_decpo.cli.scripts import dpo


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
    assert len(err.splitlines()) == 1, err
    return err.splitlines()[0]


def test_a_local_model_path_that_does_not_exist(tmp_path, pairs_file, prompts_file, capsys):
    missing = str(tmp_path / "runs" / "nowhere" / "model")
    out = tmp_path / "out"
    line = error_line(capsys, ["dpo", "--model_name_or_path", missing, "--dataset_name", pairs_file,
                               "--output_dir", str(out), *FAST_TRAIN_ARGS])  # fmt: skip
    assert (
        line
        == f"trl-decpo dpo: error: `model_name_or_path` {missing!r} does not exist: no such folder (from {tmp_path.cwd()})"
    )
    line = error_line(capsys, ["measure", "./nowhere/model", "--prompts", prompts_file, "--output_dir", str(out)])
    assert "model './nowhere/model' does not exist" in line and "Repo id" not in line
    assert not out.exists()  # nothing written


def test_a_hub_id_offline_fails_at_once_naming_the_variables(tmp_path, pairs_file, prompts_file, capsys):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the suite runs offline (conftest)
    out = tmp_path / "out"
    for argv in (
        ["sft", "--model_name_or_path", "someone/no-such-model", "--dataset_name", pairs_file,
         "--output_dir", str(out), *FAST_TRAIN_ARGS],
        ["measure", "someone/no-such-model", "--prompts", prompts_file, "--output_dir", str(out)],
        ["compare", model_path(), "someone/no-such-model", "--prompts", prompts_file],
    ):  # fmt: skip
        line = error_line(capsys, argv)
        assert "'someone/no-such-model' does not exist as a local folder" in line
        assert "not in the Hugging Face cache" in line and "HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1" in line
    assert not out.exists()


def test_a_hub_dataset_offline_names_the_variables(tmp_path):
    """Offline, `datasets` reads its cache itself: the launched script says it in one line (test_train.py tests
    that line's way out)."""
    argv = ["--model_name_or_path", model_path(), "--dataset_name", "someone/no-such-data"]
    args = dpo.make_parser().parse_args_and_config([*argv, "--output_dir", str(tmp_path / "out"), *FAST_TRAIN_ARGS])
    with pytest.raises(ValueError) as raised:
        dpo.main(*args)
    assert str(raised.value).startswith("`dataset_name` 'someone/no-such-data' does not exist")
    assert "HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1" in str(raised.value) and not (tmp_path / "out").exists()


def test_an_unreachable_hub_fails_at_once(online_without_network, prompts_file, capsys, monkeypatch):
    line = error_line(capsys, ["measure", "someone/no-such-model", "--prompts", prompts_file])
    assert "the Hub (http://127.0.0.1:9) cannot be reached (ConnectError" in line
    assert "not in the cache either" in line and "HF_HUB_OFFLINE=1" in line
    monkeypatch.setattr(sources, "in_hub_cache", lambda repo_id, revision=None: True)
    with pytest.raises(ValueError, match="it is in the cache: set HF_HUB_OFFLINE=1 to load it from there"):
        sources.check_model_source("someone/no-such-model", "model")
    with pytest.raises(ValueError, match=r"`dataset_name` 'someone/data' does not exist .* cannot be reached"):
        sources.check_dataset_source("someone/data", "`dataset_name`")


def test_what_the_checks_let_through(monkeypatch):
    sources.check_model_source(model_path(), "model")  # a local folder
    sources.check_dataset_source("someone/data", "dataset")  # offline: `datasets` reads its cache itself
    for local in ("data/pairs.jsonl", "./pairs", "/no/such/folder"):
        with pytest.raises(ValueError, match=f"dataset {local!r} looks like a local path but does not exist"):
            sources.check_dataset_source(local, "dataset")
    monkeypatch.setattr(sources, "in_hub_cache", lambda repo_id, revision=None: True)
    sources.check_model_source("someone/cached-model", "model")  # offline, in the cache
    assert [sources.is_hub_id(name) for name in ("gpt2", "org/name", "a/b/c", "./x", "/abs/path", "~/x")] == [
        *(True, True),
        *(False, False, False, False),
    ]


def test_an_unknown_option_shows_the_short_usage_and_the_option(capsys, prompts_file):
    assert main(["measure", model_path(), "--prompts", prompts_file, "--batchsize", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: trl-decpo measure MODEL --prompts PROMPTS") and len(err) == 2
    assert err[1] == "trl-decpo measure: error: unrecognized arguments: --batchsize 2 (did you mean --batch_size?)"


def test_an_unknown_command_is_two_lines(capsys):
    assert main(["weigh", "MODEL"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "invalid choice: 'weigh'" in err[1]
    assert main(["train", "--model_name_or_path", "M"]) == 2  # `train` became `dpo`, `sft`, `kto` and `reward`
    assert "invalid choice: 'train' (choose from 'dpo', 'sft', 'kto', 'reward'," in capsys.readouterr().err


def test_measure_leaves_no_output_folder_when_the_model_has_no_tokenizer(tmp_path, prompts_file, capsys):
    from tests.helpers import make_model

    folder = tmp_path / "weights_only"
    make_model().save_pretrained(folder)
    line = error_line(capsys, ["measure", str(folder), "--prompts", prompts_file, "--output_dir", str(tmp_path / "o")])
    assert "no tokenizer files" in line
    assert not (tmp_path / "o").exists()


def test_a_run_refused_by_the_trainer_can_be_run_again_into_the_same_folder(tmp_path, pairs_file):
    """transformers and TRL create `output_dir` while building the trainer, before the layer is checked: the folder is
    left empty, so the corrected command is not refused as an earlier run."""
    from trl_decpo.cli.scripts.common import resume_point

    argv = ["--model_name_or_path", model_path(), "--dataset_name", pairs_file, "--test_split_size", "0.25"]
    argv += [*FAST_TRAIN_ARGS, "--decorrelation_layers", "99"]

    def refused(out):
        with pytest.raises(ValueError, match="`decorrelation_layers` entry 99 is out of range"):
            dpo.main(*dpo.make_parser().parse_args_and_config([*argv, "--output_dir", str(out)]))

    refused(tmp_path / "new" / "run")
    assert not any((tmp_path / "new").rglob("*.*"))  # no file written
    assert resume_point(str(tmp_path / "new" / "run"), None) == (None, None)


def test_a_failed_measure_removes_only_the_empty_output_folder_it_created(tmp_path, prompts_file, capsys):
    argv = ["measure", model_path(), "--prompts", prompts_file, "--layers", "99"]
    line = error_line(capsys, [*argv, "--output_dir", str(tmp_path / "new" / "out")])
    assert "`layers` entry 99 is out of range" in line
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    error_line(capsys, [*argv, "--output_dir", str(tmp_path / "kept" / "out")])
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "out").exists()
