# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What every ``trl-decpo`` subcommand shares: its parser (a subparser of ``trl-decpo``, or standalone as TRL's
scripts allow) and how it runs (one-line errors, exit status 2)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from trl import TrlParser


def command_parser(subparsers, name: str, help_text: str, dataclass_types: tuple, prog: str | None = None):
    """The parser of subcommand ``name``: added to ``subparsers`` when given, else standalone (``prog`` names it)."""
    if subparsers is not None:
        return subparsers.add_parser(name, help=help_text, description=help_text, dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog or f"trl-decpo {name}", description=help_text)


def run_command(name: str, parser, argv: list[str], command: Callable) -> int:
    """Parse ``argv`` into the parser's dataclasses (the positional arguments last) and call
    ``command(positional, *dataclasses)``; a ``ValueError`` becomes one line on stderr and exit status 2."""
    try:
        *parsed, positional = parser.parse_args_into_dataclasses(argv)
        command(positional, *parsed)
    except ValueError as err:
        print(f"trl-decpo {name}: error: {err}", file=sys.stderr)
        return 2
    return 0
