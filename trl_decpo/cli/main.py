# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command, shaped like TRL's ``trl`` (the commands: :mod:`.commands`). A training command is parsed
and checked here, then launched through ``accelerate launch`` as ``trl NAME`` does; a measuring command runs in this
process. Only the command that runs is imported: ``trl-decpo --help`` loads neither torch nor TRL."""

from __future__ import annotations

import importlib
import subprocess
import sys
from argparse import ArgumentParser

from .commands import COMMANDS


def main(argv: list[str] | None = None) -> int:
    """Run ``trl-decpo``; returns the exit status (2 for bad input, with a one-line error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(
        prog="trl-decpo",
        description="DecPO (DPO + activation decorrelation) for TRL, and monosemanticity measurements.",
        epilog="`trl-decpo COMMAND --help` lists the options of a command.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparsers.add_parser(name, help=command.help, add_help=False)  # the command's options: its own parser
    try:
        args, _ = parser.parse_known_args(argv)  # --help, or an unknown command, exit here
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    rest = argv[argv.index(args.command) + 1 :]
    module = importlib.import_module(COMMANDS[args.command].module)
    if COMMANDS[args.command].is_training:
        return launch(args.command, module, rest)
    return module.main(module.make_parser(), rest)


def launch(name: str, script, argv: list[str]) -> int:
    """``trl-decpo NAME ARGV``: parse, check, then ``accelerate launch SCRIPT.py`` with what it does not know."""
    from accelerate.commands import launch as accelerate

    from ..compat import parser_options, resolve_accelerate_config
    from .base import unknown_message
    from .scripts.common import check_inputs

    parser, launcher = script.make_parser(prog=f"trl-decpo {name}"), accelerate.launch_command_parser()
    parser.hold_notes = True  # said once the command line is known to be good
    try:
        *parsed, config_rest, cli_rest = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
        launch_args, takes, unknown = resolve_accelerate_config(config_rest + cli_rest), parser_options(launcher), []
        for i, arg in enumerate(launch_args):  # what accelerate launch does not take either (values follow flags)
            previous = launch_args[i - 1] if i else ""
            if arg.split("=")[0] not in takes and not (takes.get(previous) and "=" not in previous):
                unknown.append(arg)
        if unknown:
            parser.error(unknown_message(unknown, [*parser_options(parser), *takes]))
        check_inputs(*parsed)
    except SystemExit as done:  # --help, or argparse's error: the usage line, then the message
        return done.code if isinstance(done.code, int) else 2
    except (ValueError, OSError) as err:  # bad options, missing models or data: one line, before anything loads
        print(f"trl-decpo {name}: error: {err}", file=sys.stderr)
        return 2
    if parser.precision_args:  # the script is given them, and says nothing
        print(f"{parser.prog}: {parser.precision_note}", file=sys.stderr)
    rest = iter(cli_rest)  # the command line without what goes to accelerate (an ordered subsequence), as `trl` does
    current, script_args = next(rest, None), []
    for arg in argv:
        if arg == current:
            current = next(rest, None)
        else:
            script_args.append(arg)
    try:
        accelerate.launch_command(
            launcher.parse_args([*launch_args, script.__file__, *script_args, *parser.precision_args])
        )
    except subprocess.CalledProcessError as err:  # the script said why (one line for bad input)
        return err.returncode
    except Exception as err:  # torch's launcher, for several processes: ChildFailedError, by rank
        if not getattr(err, "failures", None):
            raise
        return next(iter(err.failures.values())).exitcode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
