# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The stored help: ``trl-decpo COMMAND --help`` answered without importing torch, transformers or TRL (about 0.1 s
instead of 10 s). A command's parser is a ``TrlParser`` over TRL's and transformers' dataclasses, and building it
imports them all; ``help/COMMAND.json`` next to this module holds what it prints for ``--help``, with the Python, TRL
and transformers it was made with. Where the help index cannot answer (``--config FILE.yaml``, which may change
defaults; an index made with other versions), the parser does. Regenerate it after changing an option, or TRL or
transformers (``tests/cli/test_help_index.py`` fails until then)::

    python -m trl_decpo.cli.make_help_index
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path


INDEX_DIR = Path(__file__).parent / "help"
REGENERATE = "python -m trl_decpo.cli.make_help_index"


def made_with() -> dict:
    """What the stored text depends on besides this package: argparse's (Python's) formatting, TRL and transformers."""
    versions = {name: importlib.metadata.version(name) for name in ("trl", "transformers")}
    return {"python": "{}.{}".format(*sys.version_info[:2]), **versions}


def asks_for_help(argv: list[str]) -> bool:
    """``-h`` or ``--help`` among the options (before any ``--``), and no ``--config`` file."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--config" not in options and any(arg in ("-h", "--help") for arg in options)


def load_index(command: str) -> dict | None:
    """The stored help of ``command``, or ``None`` when it is missing or was made with other versions."""
    try:
        index = json.loads((INDEX_DIR / f"{command}.json").read_text(encoding="utf-8"))
        return index if index["made_with"] == made_with() else None
    except (OSError, ValueError, KeyError, importlib.metadata.PackageNotFoundError):
        return None


def answer(command: str, argv: list[str]) -> bool:
    """Print the stored help of ``command`` when ``argv`` asks for it; ``False`` when the parser must answer."""
    index = load_index(command) if asks_for_help(argv) else None
    if index is not None:
        sys.stdout.write("\n".join(index["help"]))
    return index is not None
