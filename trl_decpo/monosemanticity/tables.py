# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Result tables (aligned text, CSV, Markdown) and result files (JSON, CSV, PNG) of the measurements."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from .measure import METRICS, MonosemanticityReport


@dataclass
class Table:
    """Rows under named columns."""

    headers: list[str]
    rows: list[list]

    def records(self) -> list[dict]:
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]

    def _cells(self) -> list[list[str]]:
        return [self.headers] + [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row] for row in self.rows]

    def to_text(self) -> str:
        """Right-aligned columns under a dashed line (floats to 6 significant digits)."""
        cells = self._cells()
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        cells = self._cells()
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "---|" * len(self.headers))
        return "\n".join(lines)

    def to_csv(self, path: str) -> str:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(self.headers)
            writer.writerows(self.rows)
        return path


def report_table(report: MonosemanticityReport) -> Table:
    """One row per measured layer: its relative depth, FD, control, participation ratio and sparsity."""
    headers = ["layer", "relative_depth", *METRICS]
    return Table(headers, [[entry[key] for key in headers] for entry in report.to_dict()["layers"]])


def report_summary(report: MonosemanticityReport) -> str:
    """One line: the means over the measured layers."""
    return (
        f"mean FD {report.mean('fd'):.6g}, mean control {report.mean('control'):.6g}, mean participation ratio "
        f"{report.mean('participation_ratio'):.6g}, mean sparsity {report.mean('sparsity'):.6g}"
    )


def save_results(
    output_dir: str,
    stem: str,
    result: dict,
    table: Table | None = None,
    plot: Callable[[str], object] | None = None,
) -> list[str]:
    """Write ``<stem>.json`` (``result``), ``<stem>.csv`` (``table``) and ``<stem>.png`` (``plot(path)``) into
    ``output_dir`` (created if missing); returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, f"{stem}.json")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if table is not None:
        paths.append(table.to_csv(os.path.join(output_dir, f"{stem}.csv")))
    if plot is not None:
        paths.append(os.path.join(output_dir, f"{stem}.png"))
        plot(paths[-1])
    return paths
