"""`trl-decpo COMMAND --help` is answered from the stored help (trl_decpo/cli/help/*.json) without importing torch or
TRL, with exactly what the command's real parser prints; the stored help is what the real parsers print now
(regenerate it with `python -m trl_decpo.cli.make_help_index`)."""

import contextlib
import io
import json
import subprocess
import sys
import time

import pytest

from trl_decpo.cli import help_index
from trl_decpo.cli import main as cli_main
from trl_decpo.cli.commands import COMMANDS
from trl_decpo.cli.make_help_index import build_index, live_parser


HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")
MADE_WITH = json.loads((help_index.INDEX_DIR / "dpo.json").read_text(encoding="utf-8"))["made_with"]
# argparse formats help differently from one Python to the next: under another Python the parsers answer themselves
same_python = pytest.mark.skipif(
    MADE_WITH["python"] != help_index.made_with()["python"],
    reason=f"the help index was made with Python {MADE_WITH['python']}, which formats help differently",
)


@same_python
def test_the_stored_help_is_what_the_parsers_print_now():
    expected = build_index()
    stored = {path.name: path.read_text(encoding="utf-8") for path in help_index.INDEX_DIR.glob("*.json")}
    assert set(expected) == {f"{command}.json" for command in COMMANDS}  # one file per command, no other
    stale = sorted(name for name in expected.keys() | stored.keys() if expected.get(name) != stored.get(name))
    assert not stale, (
        f"the help index is stale ({', '.join(stale)}): an option, TRL, transformers or Python changed; regenerate "
        f"it with `{help_index.REGENERATE}` and commit trl_decpo/cli/help/"
    )


def run(argv, monkeypatch, index=True):
    """`trl-decpo ARGV`'s exit status, stdout and stderr: from the stored help, or (index=False) its real parser."""
    if not index:
        monkeypatch.setattr(sys.modules["trl_decpo.cli.main"], "answer", lambda command, argv: False)
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        status = cli_main(argv)
    monkeypatch.undo()
    return status, out.getvalue(), err.getvalue()


ANSWERED = [  # the stored help answers these exactly as the real parser does
    ["dpo", "--help"],
    ["dpo", "-h"],
    ["dpo", "--model_name_or_path", "M", "--decorrelation_coef", "2", "--help"],
    ["dpo", "--modle", "x", "--help"],  # argparse prints the help: the unknown option is not an error yet
    ["sft", "--help"],
    ["kto", "-h"],
    ["reward", "--help"],
    ["measure", "--help"],
    ["measure", "MODEL", "--prompts", "p.txt", "--help"],
    ["compare", "--help"],
    ["top-tokens", "-h"],
    ["evaluate", "--help"],
]


@same_python
@pytest.mark.parametrize("argv", ANSWERED, ids=" ".join)
def test_the_stored_help_answers_as_the_real_parser(argv, monkeypatch):
    assert help_index.asks_for_help(argv[1:])
    status, out, err = run(argv, monkeypatch)
    assert (status, out, err) == run(argv, monkeypatch, index=False) and status == 0
    assert out == live_parser(argv[0]).format_help() and out.startswith(f"usage: trl-decpo {argv[0]} ")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "run.yaml", "--help"],  # the file may change the defaults the help shows
        ["--model_name_or_path", "M"],
        ["--", "--help"],
        ["--helpful"],
    ],
)
def test_the_parser_answers_the_rest(argv):
    assert not help_index.asks_for_help(argv)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert not help_index.answer("dpo", argv)
    assert out.getvalue() == ""


def test_an_index_made_with_other_libraries_is_not_used(monkeypatch):
    assert help_index.load_index("measure") is not None
    monkeypatch.setattr(help_index, "made_with", lambda: {"python": "3.11", "trl": "0.0.1", "transformers": "5"})
    assert help_index.load_index("measure") is None and not help_index.answer("measure", ["--help"])


CLI_CASES = [["--help"], ["dpo", "--help"], ["kto", "-h"], ["measure", "--help"], ["evaluate", "--help"]]


@same_python
def test_help_imports_no_heavy_library(monkeypatch):
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
        assert (result["status"], result["out"], result["err"]) == run(argv, monkeypatch, index=False), argv
