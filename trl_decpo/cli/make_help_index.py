# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Make the help index (:mod:`.help_index`) from the real parsers of every command, and of every ``train
--trainer``: what each prints for ``--help`` (``--help-all``), its usage line, and the shape of each option.

    python -m trl_decpo.cli.make_help_index            # write trl_decpo/cli/help/*.json
    python -m trl_decpo.cli.make_help_index --check    # only say whether they are up to date (exit status 1 if not)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json

from .commands import COMMANDS
from .help_index import INDEX_DIR, REGENERATE, TRAIN_TRAINERS, index_name, made_with


def _kind(value_type, choices) -> str:
    """How the index checks an option's values: ``str``, ``int``, ``float``, ``bool`` (TRL's ``string_to_bool``), each
    possibly ``none|`` (TRL's ``X | None``), or ``other`` (the real parser decides when such an option has a value)."""
    name = getattr(value_type, "__qualname__", "")
    if value_type is None or value_type is str:
        return "str"
    if value_type in (int, float):
        return value_type.__name__
    if name == "string_to_bool":
        return "bool"
    if name == "make_choice_type_function.<locals>.<lambda>" and all(isinstance(c, str) for c in choices or ()):
        return "str"  # each choice maps to itself: the choices check them
    if name == "_accept_none.<locals>.parse":
        inner = _kind(value_type.__closure__[0].cell_contents, choices)
        return "other" if inner == "other" else f"none|{inner}"
    return "other"


def _printed(parser, argv: list[str]) -> list[str]:
    """What ``parser`` prints to stdout for ``argv`` (a help option), as lines."""
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        parser.parse_known_args(argv)
    return out.getvalue().split("\n")


def describe(parser) -> dict:
    """The index of a command's real ``parser``: what it prints, and the shape of its options."""
    from .train_parser import _FullHelp

    if parser._mutually_exclusive_groups:
        raise NotImplementedError(f"{parser.prog}: mutually exclusive options are not indexed")
    actions = []
    for action in parser._actions:
        record = {"options": action.option_strings, "dest": action.dest}
        if isinstance(action, argparse._HelpAction):
            record["action"] = "help"
        elif isinstance(action, _FullHelp):
            record["action"] = "help_all"
        elif isinstance(action, (argparse._StoreConstAction, argparse._CountAction)):  # store_true/false: no value
            record["action"] = "flag"
        elif type(action) is argparse._StoreAction:
            choices = list(action.choices) if action.choices is not None else None
            kind = _kind(action.type, choices)
            if kind != "other" and choices is not None and not all(isinstance(c, str) for c in choices):
                kind = "other"  # compared after conversion: the real parser decides
            record.update(
                action="store",
                nargs=action.nargs,
                required=action.required,
                type=kind,
                choices=choices if kind != "other" else None,
            )
        else:
            raise NotImplementedError(f"{parser.prog}: {type(action).__name__} ({action.dest}) is not indexed")
        actions.append(record)
    index = {
        "regenerate": REGENERATE,
        "made_with": made_with(),
        "prog": parser.prog,
        "allow_abbrev": parser.allow_abbrev,
        "prefix_chars": parser.prefix_chars,
        "usage": parser.format_usage().split("\n"),
        "help": _printed(parser, ["--help"]),
    }
    if any(record["action"] == "help_all" for record in actions):
        index["help_all"] = _printed(parser, ["--help-all"])
    return {**index, "actions": actions}


def live_parsers():
    """``{index name: the real parser}`` for every command (and every ``train --trainer``); imports torch and TRL."""
    for command, spec in COMMANDS.items():
        module = importlib.import_module(f".{spec.module}", __package__)
        for trainer in TRAIN_TRAINERS if command == "train" else (None,):
            yield index_name(command, trainer), module.make_parser(**({"trainer": trainer} if trainer else {}))


def dumps(index: dict) -> str:
    """The index as JSON, one line per line of text and per option (readable diffs)."""
    parts = []
    for key, value in index.items():
        if isinstance(value, list):
            items = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in value)
            parts.append(f"{json.dumps(key)}: [\n  {items}\n ]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


def build_index() -> dict[str, str]:
    """``{file name: its text}`` of the whole index, from the real parsers."""
    return {f"{name}.json": dumps(describe(parser)) for name, parser in live_parsers()}


def main(argv: list[str] | None = None) -> int:
    """Write the index (``--check``: only compare it); exit status 1 when ``--check`` finds it stale."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Only say whether the stored index is up to date.")
    args = parser.parse_args(argv)
    stale, index = [], build_index()
    for path in INDEX_DIR.glob("*.json"):  # a command or trainer no longer there
        if path.name not in index:
            stale.append(path.name)
            if not args.check:
                path.unlink()
    for file_name, text in index.items():
        path = INDEX_DIR / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(file_name)
            if not args.check:
                INDEX_DIR.mkdir(exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if not stale:
        print(f"{INDEX_DIR}: up to date")
    else:
        print(f"{INDEX_DIR}: {', '.join(stale)} {f'stale: run `{REGENERATE}`' if args.check else 'written'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
