# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command: an argparse parser that picks the command (its table: :mod:`.commands`), then the
command's own parser (its module's ``make_parser()``, a TrlParser) and ``main(parser, argv)`` run it.

Only the command that runs is imported, so ``trl-decpo --help`` loads neither torch nor TRL (about 0.1 s instead of
10 s; ``benchmarks/cli_startup.py``). ``trl-decpo COMMAND --help`` and a misspelled option are answered from the help
index (:mod:`.help_index`: what the command's parser prints, stored), without importing the command either."""

from __future__ import annotations

import importlib
import sys
from argparse import ArgumentParser

from .commands import COMMANDS
from .notices import hold_bitsandbytes_notice


def build_parser() -> ArgumentParser:
    """The ``trl-decpo`` parser: the command, then its options (parsed by the command's own parser)."""
    parser = ArgumentParser(
        prog="trl-decpo",
        description="DecPO (DPO + activation decorrelation) for TRL, and monosemanticity measurements.",
        epilog="`trl-decpo COMMAND --help` lists the options of a command.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparsers.add_parser(name, help=command.help, add_help=False)  # the command's options: its own parser
    return parser


def command_module(name: str):
    """The module that runs command ``name`` (imported now, with torch and TRL)."""
    hold_bitsandbytes_notice()  # bitsandbytes' CPU-kernel notice, only when 4-bit is asked for (.notices)
    return importlib.import_module(f".{COMMANDS[name].module}", __package__)


def main(argv: list[str] | None = None) -> int:
    """Run ``trl-decpo``; returns the exit status (2 for bad input, with a one-line error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, _ = parser.parse_known_args(argv)  # --help, or an unknown command, exit here
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    rest = argv[argv.index(args.command) + 1 :]
    from .help_index import answer

    answered = answer(args.command, rest)  # --help, or an unknown option: from the help index
    if answered is not None:
        return answered
    module = command_module(args.command)
    return module.main(module.make_parser(), rest)


if __name__ == "__main__":
    raise SystemExit(main())
