# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Seeds as the unit (docs/analysis_plan.md): DPO, DecPO with the library's defaults and DecPO at `--alt-layer`, on the
main job's task, for each of `--seeds` (8 by default, never run before the plan), every model measured by the plan's
measures; then the plan's analysis (research/seed_analysis.py).

Per model, into `<output-dir>/models/<arm>_seed<s>.pt` (a finished model is kept, so a stopped run resumes):
* the held-out rewards (per pair) and the offensiveness of greedy replies (per prompt): research/arms.py, as the main
  job measures them, with FD and its control of every layer on the held-out prompts;
* k-sparse probing (k = 1 and dense, toxic vs benign statement) at the default and the alternative layer, on every
  ToxiGen statement of the task's file;
* one base-model SAE per layer (trained once, `<output-dir>/sae_layer<L>/`): its report on the model's token
  activations of the same statements, their content tokens only (not the chat template's tokens every statement
  shares);
* the penalty `DecPOTrainer` computes on the held-out pairs at each of the two layers, without gradients.

    python -m research.seeds --output-dir outputs/seeds --threads 2
    python -m research.seed_analysis outputs/seeds        # the analysis alone, of what is there
"""

from __future__ import annotations

import argparse
import os
import time

from research.arms import ArmResult, evaluate_model, float32_forward, phase, say, train_arm, with_reference_logps
from research.assets import DEFAULT_CACHE, resolve_model
from research.demo import add_run_arguments, parse_run_arguments
from research.task import load_task


ARMS = ("dpo", "decpo", "decpo_alt")
DEFAULT_SEEDS = ",".join(str(s) for s in range(100, 108))


def heldout_penalty(model, tokenizer, task, layers: list[int], args) -> dict[int, float]:
    """The penalty `DecPOTrainer` computes at each of ``layers`` on the held-out pairs (one evaluation, no gradients:
    each layer's penalty is logged apart, and does not depend on the other layers being hooked)."""
    import tempfile

    from trl_decpo import DecPOConfig, DecPOTrainer

    with tempfile.TemporaryDirectory() as scratch:
        config = DecPOConfig(
            output_dir=scratch, per_device_eval_batch_size=4, decorrelation_layers=layers, beta=args.beta,
            use_cpu=True, bf16=False, report_to="none", activation_checkpointing=False, disable_tqdm=True,
        )  # fmt: skip
        held_out = dict(train_dataset=task.heldout, eval_dataset=task.heldout)  # DPOTrainer asks for a train set
        trainer = DecPOTrainer(model=model, args=config, processing_class=tokenizer, **held_out)
        try:
            metrics = trainer.evaluate()
        finally:  # TRL copied a PEFT model's adapter as its reference, "ref": gone again for the next measurement
            if "ref" in getattr(model, "peft_config", {}):
                model.delete_adapter("ref")
    return {layer: metrics[f"eval_decorrelation/layer_{layer}"] for layer in layers}


def content_tokens(model, tokenizer, probes, layers, args):
    """The statements' content tokens at ``layers`` (what the SAEs train on and score), the first ``--sae-rows``."""
    from trl_decpo.monosemanticity.tokens import token_activations

    return token_activations(
        model, probes, tokenizer, layers, batch_size=args.eval_batch_size, max_rows=args.sae_rows, content_only=True
    )


def measure(model, tokenizer, task, saes, layers, args, ref_logps, result: ArmResult) -> dict:
    """Every measure of the plan for one model (the base: ``ref_logps`` None), in float32 (:func:`float32_forward`):
    the main job's (research/arms.py, with the probing of the statements at ``args.probe_layers``), then the SAEs'
    and the penalty."""
    from trl_decpo import sae_report

    result, logps = evaluate_model(model, tokenizer, task, args, ref_logps, result)
    probing, probes = result.probing, task.statements
    with float32_forward(model), phase(f"  {result.name}: SAE at layers {layers}, {len(probes)} statements"):
        tokens = content_tokens(model, tokenizer, probes, layers, args)
        sae = {layer: sae_report(saes[layer], tokens[layer]) for layer in layers}
    with float32_forward(model), phase(f"  {result.name}: the penalty at layers {layers} on the held-out pairs"):
        penalty = heldout_penalty(model, tokenizer, task, layers, args)
    report = result.report
    return {
        "name": result.name,
        "seed": result.seed,
        "train_seconds": result.train_seconds,
        "reward_correct": result.rewards.correct.double().tolist(),
        "reward_margins": result.rewards.margins.double().tolist(),
        "offensiveness": list(result.scores),
        "fd": {layer: report.fd[layer] for layer in report.layers},
        "control": {layer: report.control[layer] for layer in report.layers},
        "sparsity": {layer: report.sparsity[layer] for layer in report.layers},
        "layers": layers,
        "probing": {layer: found.to_dict() for layer, found in probing.items()},
        "probing_correct": {
            layer: {"1": found.correct[1], "dense": found.correct[None]} for layer, found in probing.items()
        },
        "sae": {layer: found.to_dict() for layer, found in sae.items()},
        "penalty": penalty,
        "logps": logps,
    }


def train_saes(model, tokenizer, probes, layers, args) -> dict:
    """One TopK SAE per layer on the base model's token activations of the statements (saved; reused when there)."""
    from trl_decpo import load_sae, train_sae

    saes, tokens = {}, None
    for layer in layers:
        folder = os.path.join(args.output_dir, f"sae_layer{layer}")
        if os.path.isfile(os.path.join(folder, "cfg.json")):
            saes[layer] = load_sae(folder)
            continue
        if tokens is None:
            tokens = content_tokens(model, tokenizer, probes, layers, args)
        rows = tokens[layer]
        with phase(f"  base: a TopK SAE at layer {layer} on {len(rows)} tokens ({args.sae_steps} steps)"):
            saes[layer] = train_sae(
                rows, args.sae_features or 2 * rows.shape[1], args.sae_k, steps=args.sae_steps, batch_size=128,
                seed=0, output_dir=folder,
            )  # fmt: skip
    return saes


def main(argv=None):
    parser = add_run_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), "outputs/seeds")
    parser.set_defaults(seeds=DEFAULT_SEEDS, save_adapters=False, curve_steps=1 << 30)  # no held-out curve
    parser.add_argument("--alt-layer", type=int, default=20, help="the layer of the third arm (DecPO elsewhere)")
    parser.add_argument("--sae-features", type=int, default=0, help="SAE features (default: 2 x the layer width)")
    parser.add_argument("--sae-k", type=int, default=32)
    parser.add_argument("--sae-steps", type=int, default=1000)
    parser.add_argument("--sae-rows", type=int, default=50_000, help="token activations per model, at most")
    args = parse_run_arguments(parser, argv, "research.seeds")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_decpo.capture.sites import default_sites, nearest_layer, num_decoder_layers

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(os.path.join(args.output_dir, "models"), exist_ok=True)
    start = time.perf_counter()
    model_dir, source = (args.model_dir, args.model_dir) if args.model_dir else resolve_model("auto", DEFAULT_CACHE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = load_task(tokenizer, min_gap=args.min_gap, reply_tokens=args.reply_tokens)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    layers = [nearest_layer(default_sites(base), num_decoder_layers(base)), args.alt_layer]  # DecPOConfig's rule
    say(f"model {source}; seeds {seeds}; arms {ARMS} (DecPO at layers {layers[0]} and {layers[1]})")

    def saved(name: str) -> str:
        return os.path.join(args.output_dir, "models", f"{name}.pt")

    def save(record: dict, name: str) -> None:  # whole or not at all: a stopped run never leaves half a record
        torch.save(record, saved(name) + ".tmp")
        os.replace(saved(name) + ".tmp", saved(name))

    args.probe_layers = layers  # the main job's probing of the statements, at both layers (research/arms.py)
    saes = train_saes(base, tokenizer, task.statements, layers, args)
    if os.path.isfile(saved("base")):
        ref_logps = torch.load(saved("base"), weights_only=False)["logps"]
    else:
        record = measure(base, tokenizer, task, saes, layers, args, None, ArmResult("base", None))
        save(record, "base")
        ref_logps = record["logps"]
    with phase(f"  base: reference log-probs of the {len(task.train)} training pairs"):
        task.train = with_reference_logps(base, tokenizer, task.train, args)
    del base
    for seed in seeds:
        for arm in ARMS:
            name = f"{arm}_seed{seed}"
            if os.path.isfile(saved(name)):
                continue
            kind, hooked = ("dpo", None) if arm == "dpo" else ("decpo", None if arm == "decpo" else [args.alt_layer])
            trainer, result = train_arm(kind, seed, model_dir, task, ref_logps, args, layers=hooked)
            result.name = arm
            record = measure(trainer.model, tokenizer, task, saes, layers, args, ref_logps, result)
            record.pop("logps")
            save(record, name)
            say(f"{name}: held-out accuracy {sum(record['reward_correct']) / len(record['reward_correct']):.3f}")
            del trainer
    say(f"all models done in {(time.perf_counter() - start) / 60:.1f} min")
    from research.seed_analysis import analyse

    analyse(args.output_dir, command=args.command, minutes=(time.perf_counter() - start) / 60, layers=layers)


if __name__ == "__main__":
    main()
