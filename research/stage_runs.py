# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Two runs of `examples/sft_then_decpo.py` compared stage by stage: the saved SFT and DecPO models of run A minus
those of run B, on the same probes, each difference with a 95% paired bootstrap interval over the probes.

The runs must share their probes (same data, `--heldout` and `--seed`); typically they differ only in `--coef`. Each
saved model is measured again in float32 and checked against the value its run printed. Usage (the table of
docs/sft_then_decpo.md, coefficient 1 minus coefficient 0):

    python -m research.stage_runs outputs/sft_then_decpo outputs/sft_then_decpo_coef0
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_decpo import compare_monosemanticity, proxy_differences


def load_stage(run: str, stage: str):
    """The model a run saved for ``stage``: the merged SFT model, or the DecPO adapter on it."""
    model = AutoModelForCausalLM.from_pretrained(os.path.join(run, "sft"), dtype=torch.float32)
    return model if stage == "sft" else PeftModel.from_pretrained(model, os.path.join(run, "decpo"))


def compare_runs(run_a: str, run_b: str, seed: int = 0) -> list[dict]:
    """Per stage, layer and proxy: A minus B, with its interval (``proxy_differences``' rows, model "A" against
    "B")."""
    results = {}
    for run in (run_a, run_b):
        with open(os.path.join(run, "results.json"), encoding="utf-8") as handle:
            results[run] = json.load(handle)
    if results[run_a]["probes"] != results[run_b]["probes"] or results[run_a]["layers"] != results[run_b]["layers"]:
        raise ValueError(
            f"{run_a} and {run_b} were measured on different probes or layers: run them with the same data, "
            "--heldout, --seed and --layers"
        )
    probes, layers = results[run_a]["probes"], results[run_a]["layers"]
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(run_a, "sft"))
    rows = []
    for stage in ("sft", "decpo"):
        comparison = compare_monosemanticity(
            load_stage(run_b, stage), {"A": load_stage(run_a, stage)}, probes, tokenizer, base_name="B", layers=layers
        )
        for name, run in (("A", run_a), ("B", run_b)):  # the saved model is the one the run measured
            printed = {r["layer"]: r["fd"] for r in results[run]["stages"][stage]["layers"]}
            if any(abs(comparison.reports[name].fd[layer] - printed[layer]) > 1e-5 for layer in layers):
                raise ValueError(f"{run}: the saved {stage} model does not give the FD the run printed")
        rows += [{"stage": stage, **row} for row in proxy_differences(comparison, [("B", "A")], seed=seed)]  # A - B
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", help="output folder of examples/sft_then_decpo.py (e.g. --coef 1)")
    parser.add_argument("run_b", help="output folder of the run it is compared with (e.g. --coef 0)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = compare_runs(args.run_a, args.run_b, args.seed)
    print(f"{args.run_a} minus {args.run_b}, on the same probes (95% paired bootstrap over the probes):")
    for r in rows:
        print(
            f"{r['stage']:<6} layer {r['layer']:<3} {r['metric']:<8} {r['difference']:+.4f} "
            f"[{r['low']:+.4f}, {r['high']:+.4f}] {r['verdict']}"
        )
    return rows


if __name__ == "__main__":
    main()
