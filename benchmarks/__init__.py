# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Benchmarks of DecPO's cost against DPO (numbers in docs/benchmarks.md), run from the repository root as
``python -m benchmarks.NAME``: :mod:`benchmarks.run_all` (all of them and a summary table), :mod:`benchmarks.step_time`,
:mod:`benchmarks.memory`, :mod:`benchmarks.penalty`, :mod:`benchmarks.monosemanticity_cost`."""
