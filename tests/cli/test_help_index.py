"""`trl-decpo COMMAND --help` and a misspelled option are answered from the help index (trl_decpo/cli/help/*.json)
without importing torch or TRL, with exactly what the command's real parser prints; the stored index is what the real
parsers print now (regenerate it with `python -m trl_decpo.cli.make_help_index`)."""

import contextlib
import functools
import importlib
import io
import json
import subprocess
import sys
import time

import pytest

from trl_decpo.cli import help_index
from trl_decpo.cli.commands import COMMANDS
from trl_decpo.cli.data import TRAINERS
from trl_decpo.cli.make_help_index import build_index
from trl_decpo.cli.trainer_choice import choose_trainer


HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")
MADE_WITH = json.loads((help_index.INDEX_DIR / "measure.json").read_text(encoding="utf-8"))["made_with"]
# argparse formats help differently from one Python to the next: under another Python the parsers answer themselves
same_python = pytest.mark.skipif(
    MADE_WITH["python"] != help_index.made_with()["python"],
    reason=f"the help index was made with Python {MADE_WITH['python']}, which formats help differently",
)


@same_python
def test_the_stored_index_is_what_the_parsers_print_now():
    assert help_index.TRAIN_TRAINERS == tuple(TRAINERS)
    expected = build_index()
    stored = {path.name: path.read_text(encoding="utf-8") for path in help_index.INDEX_DIR.glob("*.json")}
    stale = sorted(name for name in expected.keys() | stored.keys() if expected.get(name) != stored.get(name))
    assert not stale, (
        f"the help index is stale ({', '.join(stale)}): an option, TRL, transformers or Python changed; regenerate "
        f"it with `{help_index.REGENERATE}` and commit trl_decpo/cli/help/"
    )
    assert {help_index.index_name(c, t) for c in COMMANDS for t in (TRAINERS if c == "train" else [None])} == {
        name.removesuffix(".json") for name in stored
    }


@functools.cache
def real_parser(command: str, trainer: str | None):
    module = importlib.import_module(f"trl_decpo.cli.{COMMANDS[command].module}")
    return module, module.make_parser(**({"trainer": trainer} if trainer else {}))


def run_real(command: str, argv: list[str]) -> tuple[int, str, str]:
    """What the command's own parser does with `argv`: exit status, stdout, stderr."""
    trainer = choose_trainer(argv) if command == "train" else None
    module, parser = real_parser(command, trainer)
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        status = module.main(parser, argv)
    return status, out.getvalue(), err.getvalue()


def run_index(command: str, argv: list[str]) -> tuple[int | None, str, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        status = help_index.answer(command, argv)
    return status, out.getvalue(), err.getvalue()


ANSWERED = [  # the index answers these exactly as the real parser does
    ("train", ["--help"]),
    ("train", ["-h"]),
    ("train", ["--help-all"]),
    ("train", ["--trainer", "sft", "--help"]),
    ("train", ["--trainer=kto", "--help-all"]),
    ("train", ["--trainer", "sft", "--trainer", "reward", "-h"]),  # the last --trainer, as choose_trainer reads it
    ("train", ["--modle_name_or_path", "x"]),
    ("train", ["--model_name_or_path", "M", "--decorelation_coef", "2"]),
    ("train", ["--trainer", "kto", "--desirable_weigth=2", "--max_steps", "3"]),
    ("train", ["--lerning_rate", "1e-5", "--use_peft", "--lora_r", "8", "--bf16", "false"]),
    ("train", ["--decorrelation_coe", "0.5", "--nothing_like_it"]),  # an abbreviation is accepted, as argparse does
    ("train", ["--modle", "x", "--help"]),  # argparse prints the help: the unknown option is not an error yet
    ("train", ["--save_total_limit", "none", "--eval_steps", "null", "--bogus"]),  # TRL's `X | None` options
    ("measure", ["--batchsize", "2"]),  # 2 is MODEL, as argparse reads it
    ("measure", ["--help"]),
    ("measure", ["MODEL", "--prompts", "p.txt", "--batchsize", "2"]),
    ("compare", ["--help"]),
    ("compare", ["BASE", "TUNED", "--prompts", "p.txt", "--layres", "3"]),
    ("top-tokens", ["-h"]),
    ("top-tokens", ["MODEL", "--layer", "2", "--prompts", "p.txt", "--help-all"]),
    ("evaluate", ["--help"]),
    ("evaluate", ["BASE", "MODEL", "--datset", "pairs.jsonl"]),
]
UNDECIDED = [  # the real parser decides (another error, a file to read, a value only the library checks, no error)
    ("train", ["--config", "run.yaml", "--help"]),
    ("train", ["--trainer", "ppo", "--help"]),
    ("train", ["--trainer", "--help"]),
    ("train", ["--max_steps", "abc", "--bogus"]),
    ("train", ["--use_peft", "maybe", "--bogus"]),
    ("train", ["--decorrelation_pooling", "max", "--bogus"]),
    ("train", ["--debug", "underflow_overflow", "--bogus"]),
    ("train", ["--lora_r", "--help"]),
    ("train", ["--learn", "1e-5", "--bogus"]),  # ambiguous: --learning_rate or --learning-rate
    ("train", ["--model_name_or_path", "M", "--dataset_name", "D"]),
    ("measure", ["--batchsize"]),  # MODEL missing: argparse's error comes first
    ("compare", ["BASE", "TUNED", "--prompt", "p.txt", "--bogus"]),  # --prompt: ambiguous
]


@same_python
@pytest.mark.parametrize("command, argv", ANSWERED)
def test_the_index_answers_as_the_real_parser(command, argv):
    status, out, err = run_index(command, argv)
    assert status is not None
    assert (status, out, err) == run_real(command, argv)
    assert (status == 0) == bool(out) and (status == 2) == ("error: unrecognized arguments" in err)


@pytest.mark.parametrize("command, argv", UNDECIDED)
def test_the_index_leaves_the_rest_to_the_real_parser(command, argv):
    assert run_index(command, argv) == (None, "", "")


def test_the_trainer_is_read_as_choose_trainer_reads_it():
    cases = [[], ["--trainer", "sft"], ["--trainer=kto"], ["--trainer", "sft", "--trainer=reward"], ["--trainer"]]
    cases += [["--trainer", "--x"], ["--trainer", "ppo"], ["--trainer="], ["--max_steps", "3"], ["--trainer", "dpo"]]
    for argv in cases:
        try:
            expected = choose_trainer(argv)
        except ValueError:
            expected = None
        assert help_index.chosen_trainer(argv) == expected, argv


def test_an_index_made_with_other_libraries_is_not_used(monkeypatch):
    monkeypatch.setattr(help_index, "made_with", lambda: {"python": "3.11", "trl": "0.0.1", "transformers": "5"})
    assert help_index.load_index("measure") is None
    assert run_index("measure", ["--help"]) == (None, "", "")


CLI_CASES = [
    ["train", "--help"],
    ["train", "--trainer", "kto", "--help-all"],
    ["train", "--modle_name_or_path", "x"],
    ["measure", "--help"],
    ["measure", "MODEL", "--batchsize", "2"],
    ["compare", "--help"],
    ["top-tokens", "--help"],
    ["evaluate", "--help"],
    ["evaluate", "BASE", "MODEL", "--datset", "pairs.jsonl"],
]


@same_python
def test_help_and_a_misspelled_option_import_no_heavy_library():
    code = (
        "import contextlib, io, json, sys, time\n"
        "start = time.perf_counter()\n"
        "from trl_decpo.cli import main\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "    status = main(json.loads(sys.argv[1]))\n"
        "seconds = time.perf_counter() - start\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps(dict(status=status, out=out.getvalue(), err=err.getvalue(), heavy=heavy, s=seconds)))\n"
    )
    for argv in CLI_CASES:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True)
        wall = time.perf_counter() - start
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"trl-decpo {' '.join(argv)}: {wall:.2f} s in a fresh interpreter ({result['s']:.3f} s in main)")
        assert result["heavy"] == [], (argv, result["heavy"])  # a time would be flaky on a loaded machine
        assert (result["status"], result["out"], result["err"]) == run_real(argv[0], argv[1:]), argv
