# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What the measurement commands share: the output folder option and plain-text / CSV tables."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OutputArguments:
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for the JSON, CSV and PNG results (created if missing)."}
    )
    plot: bool = field(default=True, metadata={"help": "Write the PNG plot into `output_dir`."})


def display_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


def unique_names(paths: list[str]) -> list[str]:
    names = [display_name(p) for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def format_table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=False)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(path: str, headers: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def prepare_output(output: OutputArguments) -> str | None:
    if output.output_dir is None:
        return None
    if os.path.exists(output.output_dir) and not os.path.isdir(output.output_dir):
        raise ValueError(f"`output_dir` {output.output_dir!r} exists and is not a folder")
    os.makedirs(output.output_dir, exist_ok=True)
    return output.output_dir


def write_results(
    out_dir: str | None,
    stem: str,
    result: dict,
    table: tuple[list[str], list[list]] | None = None,
    plot: Callable[[str], object] | None = None,
) -> None:
    """Write ``<stem>.json`` (and ``<stem>.csv`` from ``table = (headers, rows)``, and ``<stem>.png`` by calling
    ``plot(path)``) into ``out_dir``; nothing when ``out_dir`` is ``None``."""
    if not out_dir:
        return
    with open(os.path.join(out_dir, f"{stem}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if table is not None:
        write_csv(os.path.join(out_dir, f"{stem}.csv"), *table)
    if plot is not None:
        plot(os.path.join(out_dir, f"{stem}.png"))
    print(f"wrote {out_dir}")
