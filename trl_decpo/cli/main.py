# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command, built as TRL builds ``trl``: an argparse parser with one subparser per command, each
contributed by its module's ``make_parser(subparsers)``; the module's ``main(parser, argv)`` runs it."""

from __future__ import annotations

import sys
from argparse import ArgumentParser

from trl import TrlParser

from . import compare, evaluate, measure, top_tokens, train


COMMANDS = {"train": train, "measure": measure, "compare": compare, "top-tokens": top_tokens, "evaluate": evaluate}


def build_parser() -> tuple[ArgumentParser, dict]:
    """The ``trl-decpo`` parser and its subparsers by command name."""
    parser = ArgumentParser(
        prog="trl-decpo",
        description="DecPO (DPO + activation decorrelation) for TRL, and monosemanticity measurements.",
        epilog="`trl-decpo COMMAND --help` lists the options of a command.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=TrlParser)
    return parser, {name: module.make_parser(subparsers) for name, module in COMMANDS.items()}


def main(argv: list[str] | None = None) -> int:
    """Run ``trl-decpo``; returns the exit status (2 for bad input, with a one-line error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    try:
        args, _ = parser.parse_known_args(argv)  # --help, an unknown command or a bad choice exit here
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    rest = argv[argv.index(args.command) + 1 :]
    return COMMANDS[args.command].main(subparsers[args.command], rest)


if __name__ == "__main__":
    raise SystemExit(main())
