# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What every ``trl-decpo`` subcommand shares: its parser and how it runs (one-line errors, exit status 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from trl import TrlParser

from .commands import COMMANDS
from .help_index import unknown_message
from .output_dir import removed_if_left_empty


HELP_WIDTH = 78  # argparse's width in an 80-column terminal: the help index (.help_index) stores text at this width


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``TrlParser``'s formatter (each option's default shown) at :data:`HELP_WIDTH` columns whatever the terminal, so
    that the help is the same text everywhere, the stored one (:mod:`.help_index`) included."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None, **kwargs):
        super().__init__(prog, indent_increment, max_help_position, HELP_WIDTH, **kwargs)


class CommandParser(TrlParser):
    """``TrlParser`` (dataclasses with ``metadata["help"]``, a YAML file through ``--config``) for a ``trl-decpo``
    command, with a short usage line, and with unknown options reported as argparse reports its errors: the usage, then
    ``PROG: error: unrecognized arguments: ...`` with the closest known option, before any dataclass is built (so
    before any other check). A command's parser therefore never returns unknown strings."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(self.unknown_message(unknown))
        return namespace, unknown

    def unknown_message(self, unknown: list[str]) -> str:
        """The message (:func:`.help_index.unknown_message`, which answers the same error without this parser)."""
        return unknown_message(unknown, [option for action in self._actions for option in action.option_strings])


def command_parser(
    name: str, dataclass_types: tuple, prog: str | None = None, parser_class=CommandParser, **kwargs
) -> CommandParser:
    """The parser of command ``name``, named ``trl-decpo NAME`` (or ``prog``, for a script of one's own); ``kwargs`` go
    to ``parser_class`` (the help at a fixed width: :class:`HelpFormatter`)."""
    command = COMMANDS[name]
    kwargs.setdefault("formatter_class", HelpFormatter)
    return parser_class(
        dataclass_types, prog=prog or f"trl-decpo {name}", description=command.help, usage=command.usage, **kwargs
    )


def run_command(name: str, parser, argv: list[str], command: Callable) -> int:
    """Parse ``argv`` into the parser's dataclasses (the positional arguments last) and call
    ``command(positional, *dataclasses)``; a ``ValueError`` becomes one line on stderr and exit status 2."""
    try:
        *parsed, positional = parser.parse_args_into_dataclasses(argv)
        # an output folder that the failed command created and left empty is removed again
        with removed_if_left_empty(*(getattr(args, "output_dir", None) for args in parsed)):
            command(positional, *parsed)
    except SystemExit as done:  # --help, or argparse's own error (usage, then the message)
        return done.code if isinstance(done.code, int) else 2
    except ValueError as err:
        print(f"trl-decpo {name}: error: {err}", file=sys.stderr)
        return 2
    return 0
