# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What the ``trl-decpo`` commands share: help at a fixed width, unknown options reported as argparse reports its
errors (with the closest known option), and, for the measuring commands, their options, ``make_parser`` and ``main``
(one-line errors), and the output folder."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from trl import TrlParser

from .commands import COMMANDS
from .output_dir import removed_if_left_empty


HELP_WIDTH = 78  # argparse's width in an 80-column terminal: the stored help (.help_index) has this width


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``TrlParser``'s formatter at :data:`HELP_WIDTH` columns whatever the terminal: the same text everywhere."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None, **kwargs):
        super().__init__(prog, indent_increment, max_help_position, HELP_WIDTH, **kwargs)


def unknown_message(unknown: list[str], options: list[str]) -> str:
    """``unrecognized arguments: ...``, with the known option closest to the first misspelled one (of ``options``)."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    for flag in unknown:
        close = difflib.get_close_matches(flag.split("=")[0], options, n=1, cutoff=0.75) if flag[:2] == "--" else []
        if close:
            return f"{message} (did you mean {close[0]}?)"
    return message


def option_strings(parser) -> list[str]:
    from ..compat import parser_options

    return list(parser_options(parser))


class CommandParser(TrlParser):
    """``TrlParser`` for a measuring command: a short usage line, and unknown options reported before any dataclass is
    built (so it never returns unknown strings)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(unknown_message(unknown, option_strings(self)))
        return namespace, unknown


def option(default, help: str, **metadata):
    """A dataclass field for a command-line option: its default, its help and argparse's extras (``choices``)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class OutputArguments:
    output_dir: str | None = option(None, "Folder for the JSON, CSV and PNG results (created if missing).")
    plot: bool = option(True, "Write the PNG plot into `output_dir`.")


def command(name: str, dataclass_types: tuple, run: Callable, positional: str, **argument):
    """Measuring command ``name``'s ``make_parser(prog=None)`` (the dataclasses' options, then the positional argument
    ``positional``) and ``main(parser, argv)``: ``run(positional value, *dataclasses)``, a ``ValueError`` as one line
    on stderr and exit status 2."""

    def make_parser(prog: str | None = None):
        prog, help, usage = prog or f"trl-decpo {name}", COMMANDS[name].help, COMMANDS[name].usage
        parser = CommandParser(
            dataclass_types, prog=prog, description=help, usage=usage, formatter_class=HelpFormatter
        )
        parser.add_argument(positional, **argument)
        return parser

    def main(parser, argv: list[str]) -> int:
        try:
            *parsed, args = parser.parse_args_into_dataclasses(argv)
            # an output folder that the failed command created and left empty is removed again
            with removed_if_left_empty(*(getattr(args, "output_dir", None) for args in parsed)):
                run(getattr(args, positional), *parsed)
        except SystemExit as done:  # --help, or argparse's own error (usage, then the message)
            return done.code if isinstance(done.code, int) else 2
        except ValueError as err:
            print(f"trl-decpo {name}: error: {err}", file=sys.stderr)
            return 2
        return 0

    return make_parser, main


def prepare_output(output) -> str | None:
    """``output.output_dir``, created (a file of that name is an error); ``None`` without one."""
    if output.output_dir is not None and os.path.exists(output.output_dir) and not os.path.isdir(output.output_dir):
        raise ValueError(f"`output_dir` {output.output_dir!r} exists and is not a folder")
    if output.output_dir is not None:
        os.makedirs(output.output_dir, exist_ok=True)
    return output.output_dir


def write_results(out_dir: str | None, stem: str, result: dict, table=None, plot=None) -> None:
    """``<stem>.json`` / ``.csv`` / ``.png`` into ``out_dir`` (``monosemanticity.tables.save_results``), if any."""
    from ..monosemanticity.tables import save_results

    if out_dir:
        save_results(out_dir, stem, result, table, plot)
        print(f"wrote {out_dir}")
