# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The help index: ``trl-decpo COMMAND --help`` (``train --help-all``) and a misspelled option answered without
importing torch, transformers or TRL (under 0.1 s of CPU instead of about 10 s).

A command's parser is a ``TrlParser`` over TRL's and transformers' dataclasses: building it imports them all. The
index (``help/*.json`` next to this module, one file per command and per ``train --trainer``) holds what that parser
prints for ``--help`` (and ``--help-all``), its usage line, and the shape of each of its options (option strings,
number of values, value type, choices). :func:`answer` rebuilds an argparse parser of the same shape (no dataclass, no
library) and parses the command line with it, as the real parser would:

* a help option reached: the stored text, printed as the real parser prints it (exit status 0);
* options left over that no option matches (argparse's abbreviations included): the usage line and the same
  ``unrecognized arguments: ... (did you mean ...?)`` error as :class:`~.base.CommandParser` (exit status 2);
* anything else (no error, another error, a value whose check needs the library, ``--config FILE.yaml``, an index made
  with another Python, TRL or transformers): ``None``, and the real parser decides.

Regenerate the index after changing an option, or TRL or transformers (``tests/cli/test_help_index.py`` fails until
then)::

    python -m trl_decpo.cli.make_help_index
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import json
import sys
from pathlib import Path


INDEX_DIR = Path(__file__).parent / "help"
REGENERATE = "python -m trl_decpo.cli.make_help_index"
TRAIN_TRAINERS = ("dpo", "sft", "kto", "reward")  # `train --trainer` (.data.TRAINERS; tests/cli/test_help_index.py)
TRUE, FALSE = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")  # TRL's string_to_bool


def unknown_message(unknown: list[str], options: list[str]) -> str:
    """``unrecognized arguments: ...``, with the known option closest to the first misspelled one (of ``options``)."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    for flag in unknown:
        if flag.startswith("--"):
            close = difflib.get_close_matches(flag.split("=")[0], options, n=1, cutoff=0.75)
            if close:
                message += f" (did you mean {close[0]}?)"
                break
    return message


def index_name(command: str, trainer: str | None = None) -> str:
    """The index file (without ``.json``) of ``command`` (``train``: of ``--trainer trainer``)."""
    return f"{command}-{trainer or 'dpo'}" if command == "train" else command


def made_with() -> dict:
    """What the stored text depends on besides this package: argparse's (Python's) formatting, TRL and transformers."""
    versions = {name: importlib.metadata.version(name) for name in ("trl", "transformers")}
    return {"python": "{}.{}".format(*sys.version_info[:2]), **versions}


class _Undecided(Exception):
    """The index cannot tell what the real parser would do: let it decide."""


def _value_type(kind: str):
    """The value check of an option of type ``kind`` (see :func:`_kind`), raising as the real one does."""

    def check(value: str):
        if kind.startswith("none|") and value.lower() in ("none", "null"):  # TRL's `X | None` options
            return None
        base = kind.removeprefix("none|")
        if base == "str":
            return value
        if base in ("int", "float"):
            return {"int": int, "float": float}[base](value)  # ValueError: argparse's "invalid int value"
        if base == "bool" and value.lower() in TRUE + FALSE:
            return value.lower() in TRUE
        raise _Undecided(kind)  # a bad bool, or a type only the library can check: its own message

    return check


class _StoredHelp(argparse.Action):
    """``--help`` (``--help-all``): the stored text, printed as the real parser prints its help, then exit status 0."""

    def __init__(self, option_strings, dest, text="", **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.text = text

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(self.text, sys.stdout)
        parser.exit()


class _IndexParser(argparse.ArgumentParser):
    """An argparse parser with the options of the indexed one (strings, number of values, checks), nothing else."""

    def __init__(self, index: dict):
        super().__init__(
            prog=index["prog"], add_help=False, allow_abbrev=index["allow_abbrev"], prefix_chars=index["prefix_chars"]
        )
        for action in index["actions"]:
            options, kind = action["options"], action["action"]
            if kind in ("help", "help_all"):
                self.add_argument(*options, action=_StoredHelp, text="\n".join(index[kind]))
            elif kind == "flag":
                self.add_argument(*options, dest=action["dest"], action="store_const", const=None, default=None)
            else:
                shape = dict(nargs=action["nargs"], type=_value_type(action["type"]), choices=action["choices"])
                if options:
                    self.add_argument(*options, dest=action["dest"], required=action["required"], **shape)
                else:  # a positional argument (required unless its nargs says otherwise, as argparse decides)
                    self.add_argument(action["dest"], **shape)

    def error(self, message):
        raise _Undecided(message)  # argparse's other errors: the real parser prints them


def load_index(name: str) -> dict | None:
    """The stored index ``name``, or ``None`` when it is missing or was made with another Python, TRL or
    transformers."""
    try:
        index = json.loads((INDEX_DIR / f"{name}.json").read_text(encoding="utf-8"))
        return index if index["made_with"] == made_with() else None
    except (OSError, ValueError, KeyError, importlib.metadata.PackageNotFoundError):
        return None


def chosen_trainer(argv: list[str]) -> str | None:
    """The trainer of ``train`` as :func:`~.trainer_choice.choose_trainer` reads it from the command line (the last
    ``--trainer NAME`` / ``--trainer=NAME``, else ``dpo``), or ``None`` where that would be an error (it prints it)."""
    chosen = "dpo"
    for i, arg in enumerate(argv):
        if arg == "--trainer":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                return None
            chosen = argv[i + 1]
        elif arg.startswith("--trainer="):
            chosen = arg.split("=", 1)[1]
    return chosen if chosen in TRAIN_TRAINERS else None


def answer(command: str, argv: list[str]) -> int | None:
    """Answer ``trl-decpo COMMAND ARGV`` from the index when it asks for help or has an unknown option (see the module
    docstring): print what the command's parser would print and return its exit status; otherwise ``None``."""
    if "--config" in argv:  # the YAML file may set options, and `trainer:`
        return None
    trainer = chosen_trainer(argv) if command == "train" else None
    if command == "train" and trainer is None:
        return None
    try:  # HfArgumentParser reads the options in `sys.argv[0]` with the suffix `.args` when that file exists
        if sys.argv and Path(sys.argv[0]).with_suffix(".args").exists():
            return None
    except ValueError:
        return None
    index = load_index(index_name(command, trainer))
    if index is None:
        return None
    parser = _IndexParser(index)
    try:
        _, unknown = parser.parse_known_args(argv)
    except _Undecided:
        return None
    except SystemExit as done:  # a help option
        return done.code if isinstance(done.code, int) else 0
    if not unknown:
        return None
    options = [option for action in index["actions"] for option in action["options"]]
    print("\n".join(index["usage"]), end="", file=sys.stderr)
    print(f"{index['prog']}: error: {unknown_message(unknown, options)}", file=sys.stderr)
    return 2
