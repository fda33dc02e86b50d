"""`research.seeds` (docs/analysis_plan.md) end to end on a tiny model: every arm of every seed measured by the plan's
measures, the analysis of the plan written, and a stopped run resumed without training again."""

import json
from types import SimpleNamespace

import pytest
import torch
from research import task
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import research_model_dir


def test_the_seed_study_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    pytest.importorskip("sae_lens")
    from research import arms, seed_analysis, seeds

    model_dir = research_model_dir(tmp_path, monkeypatch)
    out = tmp_path / "seeds"
    argv = ["--model-dir", model_dir, "--output-dir", str(out), "--seeds", "1,2", "--steps", "2", "--curve-steps", "2"]
    argv += ["--max-new-tokens", "3", "--min-gap", "0.3", "--precision", "fp32", "--alt-layer", "0"]
    argv += ["--sae-steps", "20", "--sae-features", "64", "--sae-k", "8", "--sae-rows", "2000"]
    seeds.main(argv)
    saved = sorted(p.name for p in (out / "models").iterdir())
    assert saved == sorted(
        ["base.pt"] + [f"{arm}_seed{s}.pt" for arm in ("dpo", "decpo", "decpo_alt") for s in (1, 2)]
    )
    assert (out / "sae_layer1" / "cfg.json").is_file() and (out / "sae_layer0" / "cfg.json").is_file()
    record = torch.load(out / "models" / "decpo_seed1.pt", weights_only=False)
    assert set(record["probing"]) == set(record["sae"]) == set(record["penalty"]) == {0, 1}
    # the SAE scores the statements' content tokens: not the chat template's, which every statement shares
    from trl_decpo.monosemanticity.tokens import token_activations

    statements = task.load_task(AutoTokenizer.from_pretrained(model_dir), 0.3).statements
    assert (
        len(statements) == 200
        and sum(task.load_task(AutoTokenizer.from_pretrained(model_dir), 0.3).statement_labels) == 100
    )
    content = token_activations(base_model := AutoModelForCausalLM.from_pretrained(model_dir), statements,
                                AutoTokenizer.from_pretrained(model_dir), [1], content_only=True)[1]  # fmt: skip
    every = token_activations(base_model, statements, AutoTokenizer.from_pretrained(model_dir), [1])[1]
    assert record["sae"][1]["num_rows"] == min(len(content), 2000) and len(content) < len(every)
    assert (
        len(record["reward_correct"])
        == len(record["reward_margins"])
        == task.load_task(AutoTokenizer.from_pretrained(model_dir), 0.3).meta["heldout_pairs"]
    )
    assert record["penalty"][1] > 0 and 0 <= record["probing"][1]["accuracy"]["1"] <= 1
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    heldout = task.load_task(AutoTokenizer.from_pretrained(model_dir), 0.3)
    args = SimpleNamespace(beta=0.1)
    both = seeds.heldout_penalty(base, AutoTokenizer.from_pretrained(model_dir), heldout, [1, 0], args)
    alone = seeds.heldout_penalty(base, AutoTokenizer.from_pretrained(model_dir), heldout, [1], args)
    assert both[1] == pytest.approx(alone[1], rel=1e-6)  # a layer's penalty does not depend on the others hooked
    saved_base = torch.load(out / "models" / "base.pt", weights_only=False)
    assert saved_base["penalty"][0] == pytest.approx(both[0], rel=1e-6) and saved_base["layers"] == [1, 0]
    analysis = json.load(open(out / "analysis.json"))
    assert [r["key"] for r in analysis["primary"]] == ["fd", "control", "probe_k1", "sae_features"]
    assert len(analysis["secondary"]) == 7 and analysis["seeds"] == [1, 2] and analysis["layers"] == [1, 0]
    dpo = [torch.load(out / "models" / f"dpo_seed{s}.pt", weights_only=False) for s in (1, 2)]
    decpo = [torch.load(out / "models" / f"decpo_seed{s}.pt", weights_only=False) for s in (1, 2)]
    fd = analysis["primary"][0]
    assert fd["mean"] == pytest.approx(sum(b["fd"][1] - a["fd"][1] for a, b in zip(dpo, decpo, strict=True)) / 2)
    report = (out / "report.md").read_text()
    assert "## Primary: monosemanticity at layer 1" in report and "## The default layer: 0 against 1" in report
    accuracy = analysis["alignment"]["accuracy"]
    assert accuracy["verdict"] in ("non-inferior", "non-inferior, detectably worse", "not shown non-inferior", "worse")
    assert f"| held-out reward accuracy | {accuracy['a']:.4f} | {accuracy['b']:.4f} |" in report
    assert "FD(DPO) - FD(base) per layer (exploratory" in report and "- layer 3:" in report
    # the per-layer figure's rows: seed-level intervals of each comparison, from the records themselves
    assert (out / "seed_differences_by_depth.png").stat().st_size > 0 and "seed_differences_by_depth.png" in report
    rows = {(r["comparison"], r["metric"], r["layer"]): r for r in analysis["per_layer"]}
    assert len(rows) == 3 * 2 * 4  # three comparisons, FD and control, the tiny model's 4 layers
    alt = [torch.load(out / "models" / f"decpo_alt_seed{s}.pt", weights_only=False) for s in (1, 2)]
    gain = [r["control"][2] - saved_base["control"][2] for r in dpo]
    assert rows[("DPO - base", "control", 2)]["mean"] == pytest.approx(sum(gain) / 2)
    assert rows[("DecPO (alternative layer) - DPO", "fd", 0)]["mean"] == pytest.approx(
        sum(b["fd"][0] - a["fd"][0] for a, b in zip(dpo, alt, strict=True)) / 2
    )
    # a stopped run resumes: nothing is trained again, and the analysis is the same
    monkeypatch.setattr(arms, "train_arm", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(seeds, "train_arm", lambda *a, **k: pytest.fail("trained again"))
    seeds.main(argv)
    assert json.load(open(out / "analysis.json"))["primary"] == analysis["primary"]
    alone = seed_analysis.analyse(str(out))  # the layers read back from the run, in its order
    assert alone["primary"] == analysis["primary"] and alone["layers"] == [1, 0]


def test_the_probe_rule_reads_p3_only_where_the_base_dense_probe_beats_chance():
    from research.seed_analysis import probe_readable, wilson_low

    assert wilson_low(0.5, 60) == pytest.approx(0.3773, abs=1e-3)  # the Wilson interval of 30 of 60
    assert wilson_low(0.9, 60) > 0.5
    at_chance = {"probing": {10: {"accuracy": {"dense": 0.52}, "num_test": 60, "chance": 0.5}}}
    above = {"probing": {10: {"accuracy": {"dense": 0.75}, "num_test": 60, "chance": 0.5}}}
    assert not probe_readable(at_chance, 10)["readable"] and probe_readable(above, 10)["readable"]
