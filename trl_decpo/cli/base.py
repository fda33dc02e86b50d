# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What the ``trl-decpo`` commands share: unknown options reported with the closest known one, and the measuring
commands' parser, options, ``make_parser`` and ``main`` (one-line errors)."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from trl import TrlParser

from ..compat import parser_options
from .commands import COMMANDS


def unknown_message(unknown: list[str], options: list[str]) -> str:
    """``unrecognized arguments: ...``, with the known option closest to the first misspelled one (of ``options``)."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    for flag in unknown:
        close = difflib.get_close_matches(flag.split("=")[0], options, n=1, cutoff=0.75) if flag[:2] == "--" else []
        if close:
            return f"{message} (did you mean {close[0]}?)"
    return message


class CommandParser(TrlParser):
    """``TrlParser`` for a measuring command: unknown options are an error before any dataclass is built."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(unknown_message(unknown, list(parser_options(self))))
        return namespace, unknown


def option(default, help: str, **metadata):
    """A dataclass field for a command-line option: its default, its help and argparse's extras (``choices``)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class OutputArguments:
    output_dir: str | None = option(None, "Folder for the JSON, CSV and PNG results (created if missing).")
    plot: bool = option(True, "Write the PNG plot into `output_dir`.")


def command(name: str, dataclass_types: tuple, run: Callable, positional: str, **argument):
    """Measuring command ``name``'s ``make_parser(prog=None)`` and ``main(parser, argv)``, which calls
    ``run(positional value, *dataclasses)``; a ``ValueError`` is one line on stderr and exit status 2."""

    def make_parser(prog: str | None = None):
        prog, help, usage = prog or f"trl-decpo {name}", COMMANDS[name].help, COMMANDS[name].usage
        parser = CommandParser(dataclass_types, prog=prog, description=help, usage=usage)
        parser.add_argument(positional, **argument)
        return parser

    def main(parser, argv: list[str]) -> int:
        try:
            *parsed, args = parser.parse_args_into_dataclasses(argv)
            for out in filter(None, (getattr(group, "output_dir", None) for group in parsed)):
                if os.path.exists(out) and not os.path.isdir(out):
                    raise ValueError(f"`output_dir` {out!r} exists and is not a folder")
            run(getattr(args, positional), *parsed)
        except SystemExit as done:  # --help, or argparse's own error (usage, then the message)
            return done.code if isinstance(done.code, int) else 2
        except ValueError as err:
            print(f"trl-decpo {name}: error: {err}", file=sys.stderr)
            return 2
        return 0

    return make_parser, main
