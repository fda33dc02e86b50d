# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Argument checks shared by every layer: each raises a ``ValueError`` that names the field and what is allowed."""

from __future__ import annotations

import os
from collections.abc import Iterable


def check_choice(name: str, value, allowed: Iterable) -> None:
    """``value`` must be one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}")


def is_int(value) -> bool:
    """A true integer (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """``value`` must be an integer ``>= minimum`` (or ``None`` when ``allow_none``)."""
    if value is None and allow_none:
        return
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 and not allow_none else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {what}{' or None' if allow_none else ''}, got {value!r}")


# How `datasets` reads each kind of local data file (its packaged builders), by file suffix.
DATA_FILE_BUILDERS = {
    ".txt": "text",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


def load_data_file(path: str, field: str, suffixes: Iterable[str] = tuple(DATA_FILE_BUILDERS)):
    """A local data file as one ``datasets.Dataset``, read by the ``datasets`` builder of its suffix; ``field`` names
    the option in the error raised for a suffix outside ``suffixes``."""
    import datasets

    suffixes = list(suffixes)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        raise ValueError(
            f"`{field}` file {path!r} has an unsupported suffix {suffix!r}; allowed: {', '.join(suffixes)}"
        )
    return datasets.load_dataset(DATA_FILE_BUILDERS[suffix], data_files=path, split="train")


def check_layers(name: str, layers) -> list[int] | None:
    """Decoder layer indices: ``None`` (the caller's default), one integer, or a non-empty list of distinct integers
    (negative ones count from the end; the range is checked against the model later). Returns a list (or ``None``)."""
    if layers is None:
        return None
    if is_int(layers):
        return [layers]
    if not isinstance(layers, (list, tuple)) or len(layers) == 0:
        raise ValueError(
            f"`{name}` must be a non-empty list of layer indices, or None for the default; got {layers!r}"
        )
    if not all(is_int(i) for i in layers):
        raise ValueError(f"`{name}` must be a list of layer indices, got {list(layers)!r}: integers only")
    if len(set(layers)) != len(layers):
        raise ValueError(f"`{name}` names a layer twice: {list(layers)!r}")
    return list(layers)
