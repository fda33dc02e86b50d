# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Make the help index (:mod:`.help_index`): what each command's real parser prints for ``--help``.

python -m trl_decpo.cli.make_help_index            # write trl_decpo/cli/help/*.json
python -m trl_decpo.cli.make_help_index --check    # only say whether they are up to date (exit status 1 if not)
"""

from __future__ import annotations

import argparse
import importlib
import json

from .commands import COMMANDS
from .help_index import INDEX_DIR, REGENERATE, made_with


def live_parser(command: str):
    """The real parser of ``command`` (imports torch and TRL)."""
    return importlib.import_module(COMMANDS[command].module).make_parser(prog=f"trl-decpo {command}")


def build_index() -> dict[str, str]:
    """``{file name: its text}`` of the whole index, from the real parsers (one line of JSON per line of help)."""
    index = {}
    for command in COMMANDS:
        lines = live_parser(command).format_help().split("\n")
        items = ",\n  ".join(json.dumps(line, ensure_ascii=False) for line in lines)
        head = f'{{\n "regenerate": {json.dumps(REGENERATE)},\n "made_with": {json.dumps(made_with())},\n'
        index[f"{command}.json"] = f'{head} "help": [\n  {items}\n ]\n}}\n'
    return index


def main(argv: list[str] | None = None) -> int:
    """Write the index (``--check``: only compare it); exit status 1 when ``--check`` finds it stale."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Only say whether the stored index is up to date.")
    args = parser.parse_args(argv)
    index = build_index()
    stale = sorted(path.name for path in INDEX_DIR.glob("*.json") if path.name not in index)  # a command gone
    stale += [
        name
        for name, text in index.items()
        if not (INDEX_DIR / name).exists() or (INDEX_DIR / name).read_text(encoding="utf-8") != text
    ]
    if not args.check:
        for name in stale:
            path = INDEX_DIR / name
            path.unlink() if name not in index else path.write_text(index[name], encoding="utf-8")
    state = (
        f"{', '.join(stale)} {f'stale: run `{REGENERATE}`' if args.check else 'written'}" if stale else "up to date"
    )
    print(f"{INDEX_DIR}: {state}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
