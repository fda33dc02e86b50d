# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`python -m research.stage_runs`: two runs of examples/sft_then_decpo.py compared stage by stage (tiny model)."""

import importlib.util
import json
import os

import pytest
from research import stage_runs


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "sft_then_decpo", os.path.join(ROOT, "examples", "sft_then_decpo.py")
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    folder = tmp_path_factory.mktemp("runs")
    common = ["--sft-steps", "2", "--decpo-steps", "2", "--heldout", "0.75"]
    for name, extra in (("on", ["--coef", "1"]), ("off", ["--coef", "0"]), ("other", ["--seed", "1"])):
        example.main([*common, *extra, "--output-dir", str(folder / name)])
    return folder


def test_differences_are_run_a_minus_run_b_per_stage_with_intervals(runs):
    rows = stage_runs.compare_runs(str(runs / "on"), str(runs / "off"))
    results = {name: json.loads((runs / name / "results.json").read_text()) for name in ("on", "off")}
    assert [(r["stage"], r["metric"]) for r in rows] == [
        (stage, metric) for stage in ("sft", "decpo") for metric in ("fd", "control", "sparsity")
    ]
    for row in rows:
        a, b = (results[name]["stages"][row["stage"]]["layers"][0][row["metric"]] for name in ("on", "off"))
        assert row["difference"] == pytest.approx(a - b, abs=1e-5)  # A minus B, as each run printed them
        assert row["low"] <= row["difference"] <= row["high"]
    assert any(abs(row["difference"]) > 1e-6 for row in rows)  # the penalty changed the trained models


def test_runs_on_different_probes_are_refused(runs):
    with pytest.raises(ValueError, match="different probes or layers"):
        stage_runs.compare_runs(str(runs / "on"), str(runs / "other"))
