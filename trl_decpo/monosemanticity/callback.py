# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""``MonosemanticityCallback``: FD, its control and sparsity per layer at each evaluation, for DecPO and plain DPO runs
alike."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from transformers import TrainerCallback
from transformers.utils import logging

from ..capture import describe_sites, resolve_measurement_sites, unwrap_model
from ..compat import log_outside_step, trainer_pad_token_id
from ..utils import check_choice, check_int
from .measure import METRICS, measure_monosemanticity
from .probes import PROBE_POOLING_CHOICES, first_occurrences, load_prompts, prepare_probes, prompts_from_dataset


logger = logging.get_logger(__name__)

KEY_PREFIX = "eval_monosemanticity"


class MonosemanticityCallback(TrainerCallback):
    """Measures feature decorrelation, its control and activation sparsity of the policy at each evaluation.

    Like TRL's own callbacks that need the trainer (``LogCompletionsCallback``), it is built with the trainer and added
    to it::

        trainer = DecPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=tok)
        trainer.add_callback(MonosemanticityCallback(trainer))

    At each evaluation (and, by default, once before the first step) it runs the probe prompts through the policy
    without gradients, in batches, and logs through ``trainer.log`` (so ``log_history``, TensorBoard and W&B get them):
    ``eval_monosemanticity/<metric>/layer_<i>`` for ``<metric>`` in ``fd``, ``control`` (FD's anisotropy-free control,
    ``1 - mean cos^2`` of the mean-centred rows), ``participation_ratio`` and ``sparsity``, their ``.../mean`` over the
    measured layers and, for a ``DecPOTrainer`` with the penalty on, ``.../hooked`` (mean over the penalised layers). The
    history goes to ``<output_dir>/monosemanticity.json`` after every measurement and, at the end of training, the
    per-layer curves against the step to ``<output_dir>/monosemanticity_by_step.png``.

    Args:
        trainer: a TRL trainer (``DPOTrainer``, ``DecPOTrainer``, the decorrelated SFT / KTO / reward / GRPO / RLOO
            trainers, ...).
        probes: the probe prompts: ``None`` for the prompts of ``trainer.eval_dataset``; a dataset (its ``prompt_ids``
            or ``prompt_column``; each distinct prompt once, as a dataset may repeat them); a list of strings, chat message lists or token id lists; or a path / dataset id
            (see :func:`trl_decpo.load_prompts`).
        layers: decoder layers to measure; ``None``: all.
        site: module path inside a decoder layer; ``None``: the trainer's ``decorrelation_site`` for a DecPO run, else
            the architecture default.
        max_samples: at most this many probes (the paper uses 1000).
        batch_size: probes per forward; ``None``: ``per_device_eval_batch_size``.
        max_length: probes keep their last ``max_length`` tokens.
        pooling: which tokens make a probe's row: ``"auto"`` (default: the last token of the last message's content
            for chat probes, including the ``prompt_ids`` of an eval dataset whose ``prompt`` column holds chat
            messages; the last token otherwise), ``"last"``, ``"last_content"`` or ``"mean"`` (see
            :func:`trl_decpo.monosemanticity.probes.prepare_probes`).
        measure_on_train_begin: also measure the model before the first training step (step 0).
        measure_on_train_end: also measure at the end of training when the last step was not evaluated, so that the
            history (and the model card) ends with the trained model.
        measure_steps: also measure every this many optimizer steps, without a full evaluation (``None``: only at
            evaluations).
        plot: draw the curves at the end of training.
    """

    def __init__(
        self,
        trainer,
        probes=None,
        layers: Sequence[int] | None = None,
        site: str | None = None,
        max_samples: int | None = 1000,
        batch_size: int | None = None,
        max_length: int | None = 512,
        prompt_column: str = "prompt",
        measure_on_train_begin: bool = True,
        measure_on_train_end: bool = True,
        measure_steps: int | None = None,
        plot: bool = True,
        history_file: str = "monosemanticity.json",
        plot_file: str = "monosemanticity_by_step.png",
        pooling: str = "auto",
    ):
        check_choice("pooling", pooling, PROBE_POOLING_CHOICES)
        if trainer is None or not hasattr(trainer, "log") or not hasattr(trainer, "model"):
            raise ValueError(
                "MonosemanticityCallback needs the trainer: MonosemanticityCallback(trainer), then "
                "trainer.add_callback(callback)"
            )
        for name, value, least in (
            ("max_samples", max_samples, 2),
            ("batch_size", batch_size, 1),
            ("measure_steps", measure_steps, 1),
            ("max_length", max_length, 1),
        ):
            check_int(name, value, least, allow_none=True)
        self.trainer = trainer
        self.max_length = max_length
        self.batch_size = batch_size
        self.measure_on_train_begin = measure_on_train_begin
        self.measure_on_train_end = measure_on_train_end
        self.measure_steps = measure_steps
        self.plot = plot
        self.history_file = history_file
        self.plot_file = plot_file
        self.history: list[dict] = []
        self._last_step: int | None = None

        model = unwrap_model(trainer.model)
        penalised = (
            getattr(trainer, "decorrelation_sites", []) if getattr(trainer, "decorrelation_enabled", False) else []
        )
        if site is None and penalised:
            site = trainer.args.decorrelation_site  # the trainer's site (None: the same per-layer default rule)
        sites = resolve_measurement_sites(model, layers, site)
        self.site, self.layers, self.site_name = site, [s.layer for s in sites], describe_sites(sites)
        measured = {s.layer: s.site for s in sites}
        self.hooked_layers = [s.layer for s in penalised if measured.get(s.layer) == s.site]

        prompts, chats = self._probe_prompts(probes, prompt_column, max_samples)
        self.probes = prepare_probes(prompts, trainer.processing_class, max_length, pooling, chats)
        self.pooling = self.probes.pooling  # "auto" resolved
        if len(self.probes) < 2:
            raise ValueError(f"MonosemanticityCallback needs at least 2 probe prompts, got {len(self.probes)}")

    def _probe_prompts(self, probes, column: str, max_samples: int | None) -> tuple[list, list | None]:
        """The probe prompts, and for a tokenized dataset the chat messages beside its ``prompt_ids`` (if any)."""
        if probes is None:
            dataset = self.trainer.eval_dataset
            if dataset is None:
                raise ValueError("MonosemanticityCallback: the trainer has no eval_dataset; pass `probes`")
            if isinstance(dataset, dict):
                raise ValueError(
                    f"MonosemanticityCallback: eval_dataset is a dict of {sorted(dataset)}; pass one of "
                    "them (or another probe set) as `probes`"
                )
            probes = dataset
        if isinstance(probes, str):
            return load_prompts(probes, column=column, max_samples=max_samples), None
        if hasattr(probes, "column_names") and not hasattr(probes, "__len__"):
            raise ValueError(
                "MonosemanticityCallback: `probes` is an IterableDataset; pass a map-style dataset or a "
                "list of prompts (e.g. `list(itertools.islice(dataset, 1000))`)"
            )
        if hasattr(probes, "column_names"):  # each distinct prompt once (a KTO dataset repeats them)
            prompts = prompts_from_dataset(probes, column, "probes")
            keep = first_occurrences(prompts)[:max_samples]
            names = probes.column_names
            chats = None
            if "prompt_ids" in names and column in names:
                messages = probes[column]
                chats = [messages[i] for i in keep]
            return [prompts[i] for i in keep], chats
        if isinstance(probes, (list, tuple)):
            return list(probes)[:max_samples], None
        raise ValueError(f"`probes` must be None, a dataset, a list of prompts or a path, got {type(probes).__name__}")

    # ------------------------------------------------------------------------------------------------------------------

    def measure(self, args, state) -> dict[str, float]:
        """Measure now, log through the trainer, append to the history and write it; returns the logged values."""
        trainer = self.trainer
        report = measure_monosemanticity(
            trainer.model,
            self.probes,
            trainer.processing_class,
            layers=self.layers,
            site=self.site,
            batch_size=self.batch_size or args.per_device_eval_batch_size,
            max_length=None,
            pad_token_id=trainer_pad_token_id(trainer),
            accelerator=trainer.accelerator,
            progress=not args.disable_tqdm and state.is_world_process_zero,
        )
        logs = {}
        for metric in METRICS:
            values = getattr(report, metric)
            for layer in report.layers:
                logs[f"{KEY_PREFIX}/{metric}/layer_{layer}"] = values[layer]
            logs[f"{KEY_PREFIX}/{metric}/mean"] = report.mean(metric)
            if self.hooked_layers:
                logs[f"{KEY_PREFIX}/{metric}/hooked"] = report.mean(metric, self.hooked_layers)
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            **report.to_dict(),
            "hooked_layers": self.hooked_layers,
        }
        self.history.append(record)
        self._last_step = state.global_step
        log_outside_step(trainer, logs)  # leaves the step's own training metrics and log to the trainer
        if state.is_world_process_zero:
            self._write_history(args.output_dir)
        return logs

    def _write_history(self, output_dir: str) -> None:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, self.history_file)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.history, f, indent=1)
        os.replace(path + ".tmp", path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # resumed: keep the earlier measurements
            path = os.path.join(args.output_dir, self.history_file)
            if os.path.isfile(path) and not self.history:
                with open(path, encoding="utf-8") as f:
                    earlier = [r for r in json.load(f) if r["step"] <= state.global_step]
                same = all(
                    r.get("site") == self.site_name
                    and [e["layer"] for e in r["layers"]] == self.layers
                    and r.get("pooling", "last") == self.pooling
                    for r in earlier
                )
                if same:
                    self.history = earlier
                else:
                    logger.warning(
                        f"{path} was measured at other layers, another site or another pooling; its history is not "
                        "continued"
                    )
        else:
            self.history = []  # a new run from step 0 (e.g. `train()` called again): a new history
            self._last_step = None
            if self.measure_on_train_begin:
                self.measure(args, state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.measure_steps and state.global_step % self.measure_steps == 0 and self._last_step != state.global_step:
            self.measure(args, state)

    def on_evaluate(self, args, state, control, **kwargs):
        if self._last_step == state.global_step:  # several eval datasets: measure once per step
            return
        self.measure(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.measure_on_train_end and self._last_step != state.global_step:
            self.measure(args, state)
        if self.plot and self.history and state.is_world_process_zero:
            from .plotting import plot_proxies_by_step

            plot_proxies_by_step(
                self.history,
                os.path.join(args.output_dir, self.plot_file),
                title=f"{args.run_name or os.path.basename(os.path.normpath(args.output_dir))} ({self.site_name})",
            )

    def card_section(self) -> str:
        """Markdown for the model card: FD, its control and sparsity per layer, first and last measurement."""
        if not self.history:
            return ""
        first, last = self.history[0], self.history[-1]
        before = {e["layer"]: e for e in first["layers"]}
        metrics = ("fd", "control", "sparsity")

        def cell(value):
            return "n/a" if value is None else f"{value:.4f}"

        def mean(record, key):
            values = [e.get(key) for e in record["layers"]]
            return None if any(v is None for v in values) else sum(values) / len(values)

        rows = []
        for entry in last["layers"]:
            layer = entry["layer"]
            if layer not in before:
                continue
            mark = " (penalised)" if layer in self.hooked_layers else ""
            cells = [f"{cell(before[layer].get(k))} | {cell(entry.get(k))}" for k in metrics]
            rows.append(f"| {layer}{mark} | " + " | ".join(cells) + " |")
        mean_row = "| mean | " + " | ".join(f"{cell(mean(first, k))} | {cell(mean(last, k))}" for k in metrics) + " |"
        a, b = first["step"], last["step"]
        header = " | ".join(f"{name}, step {a} | {name}, step {b}" for name in ("FD", "control", "sparsity"))
        pooling = {
            "last": "at the last prompt token",
            "last_content": "at the last token of the prompt's content (before the chat template's generation prompt)",
            "mean": "averaged over the prompt's tokens",
        }.get(last.get("pooling", "last"), last.get("pooling"))
        return (
            "\n\n## Monosemanticity\n\n"
            f"Feature decorrelation (FD = 1 - mean pairwise cosine of the `{last['site']}` activations {pooling} "
            f"over {last['num_prompts']} probe prompts; higher = more monosemantic), its control (1 - mean squared "
            "cosine of the mean-centred activations: FD also rises when a direction shared by all prompts shrinks, "
            "the control does not) and activation sparsity (variance across hidden dimensions), measured by "
            f"trl-decpo's `MonosemanticityCallback` at step {a} and step {b}.\n\n"
            f"| layer | {header} |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n" + mean_row + "\n"
        )
