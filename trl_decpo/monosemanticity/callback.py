# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""``MonosemanticityCallback``: FD, its control and sparsity per layer at each evaluation, for DecPO and plain DPO runs
alike."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from transformers import TrainerCallback
from transformers.utils import logging

from ..capture import describe_sites, resolve_measurement_sites, unwrap_model
from ..compat import log_outside_step, trainer_pad_token_id
from ..independent import SAESettings, load_sae, sae_report, sparse_probing
from ..utils import check_choice, check_int
from .measure import METRICS, measure_monosemanticity
from .probes import (
    PROBE_POOLING_CHOICES,
    first_occurrences,
    load_labels,
    load_prompts,
    prepare_probes,
    prompts_from_dataset,
)
from .tokens import check_sae_layer, token_activations


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
        labels: a concept label per probe, for k-sparse probing at every measured layer (:func:`sparse_probing`,
            ``probing_ks`` its ``ks``): a column of the probe dataset (or of the probe file), or a list with one label
            per given probe. Logs ``.../probe_k1/layer_<i>`` and ``.../probe_dense/layer_<i>`` (held-out accuracy of
            the best neuron and of every neuron) and their mean and hooked mean.
        sae: an SAE's view of the probes' token activations at ``sae.layer``: trained at the first measurement (step
            0: the model before training) unless ``sae.sae`` gives one, saved to ``<output_dir>/monosemanticity_sae``
            (SAELens' format; a resumed run loads it from there), and scoring every later measurement. Logs
            ``.../sae_explained_variance``, ``.../sae_l0``, ``.../sae_dead_fraction`` and
            ``.../sae_neuron_features`` (mean effective number of features per neuron; lower = more monosemantic).
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
        labels: str | Sequence | None = None,
        probing_ks: Sequence[int | None] | None = None,
        sae: SAESettings | None = None,
    ):
        check_choice("pooling", pooling, PROBE_POOLING_CHOICES)
        if sae is not None and not isinstance(sae, SAESettings):
            raise ValueError(f"`sae` must be an SAESettings, got {type(sae).__name__}")
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
        if sae is not None:
            check_sae_layer(model, sae.layer, site)
        measured = {s.layer: s.site for s in sites}
        self.hooked_layers = [s.layer for s in penalised if measured.get(s.layer) == s.site]

        prompts, chats, self.labels = self._probe_prompts(probes, prompt_column, max_samples, labels)
        self.probes = prepare_probes(prompts, trainer.processing_class, max_length, pooling, chats)
        self.probing_ks, self.sae_settings, self.sae = probing_ks, sae, None
        self.pooling = self.probes.pooling  # "auto" resolved
        if len(self.probes) < 2:
            raise ValueError(f"MonosemanticityCallback needs at least 2 probe prompts, got {len(self.probes)}")

    def _probe_prompts(self, probes, column: str, max_samples: int | None, labels=None):
        """The probe prompts, for a tokenized dataset the chat messages beside its ``prompt_ids`` (if any), and the
        labels of the prompts kept (``None`` without ``labels``)."""
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
            prompts = load_prompts(probes, column=column, max_samples=max_samples)
            if isinstance(labels, str):
                labels = load_labels(probes, labels, max_samples)
            return prompts, None, self._check_labels(labels, prompts)
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
            if isinstance(labels, str):
                if labels not in names:
                    raise ValueError(f"`labels` {labels!r} is not a column of the probes; their columns are {names}")
                labels = probes[labels]
            if labels is not None:
                labels = [labels[i] for i in keep] if len(labels) == len(prompts) else labels
            kept = [prompts[i] for i in keep]
            return kept, chats, self._check_labels(labels, kept)
        if isinstance(probes, (list, tuple)):
            if isinstance(labels, str):
                raise ValueError(
                    "`labels` names a column: give the probes as a dataset or a file, or labels as a list"
                )
            kept = list(probes)[:max_samples]
            return kept, None, self._check_labels(None if labels is None else list(labels)[:max_samples], kept)
        raise ValueError(f"`probes` must be None, a dataset, a list of prompts or a path, got {type(probes).__name__}")

    @staticmethod
    def _check_labels(labels, prompts) -> list | None:
        if labels is not None and len(labels) != len(prompts):
            raise ValueError(f"`labels` has {len(labels)} entries for {len(prompts)} probe prompts: one per probe")
        return None if labels is None else list(labels)

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
        if self.labels is not None:
            record["sparse_probing"] = self._probe(report, logs)
        if self.sae_settings is not None:
            record["sae"] = self._score_sae(args, state, logs)
        self.history.append(record)
        self._last_step = state.global_step
        log_outside_step(trainer, logs)  # leaves the step's own training metrics and log to the trainer
        if state.is_world_process_zero:
            self._write_history(args.output_dir)
        return logs

    def _probe(self, report, logs: dict) -> dict:
        """k-sparse probing of every measured layer's rows; the accuracies go into ``logs``."""
        results = {
            layer: sparse_probing(report.rows(layer), self.labels, ks=self.probing_ks) for layer in report.layers
        }
        for key, k in (("probe_k1", 1), ("probe_dense", None)):
            values = {layer: result.accuracy.get(k) for layer, result in results.items()}
            if any(v is None for v in values.values()):
                continue
            for layer, value in values.items():
                logs[f"{KEY_PREFIX}/{key}/layer_{layer}"] = value
            logs[f"{KEY_PREFIX}/{key}/mean"] = sum(values.values()) / len(values)
            if self.hooked_layers:
                logs[f"{KEY_PREFIX}/{key}/hooked"] = sum(values[i] for i in self.hooked_layers) / len(
                    self.hooked_layers
                )
        return {str(layer): result.to_dict() for layer, result in results.items()}

    def _score_sae(self, args, state, logs: dict) -> dict:
        """The SAE's report on the probes' token activations now (training or loading the SAE first if needed)."""
        settings, trainer = self.sae_settings, self.trainer
        captured = token_activations(
            trainer.model, self.probes, trainer.processing_class, [settings.layer], self.site,
            self.batch_size or args.per_device_eval_batch_size, None, settings.max_rows, trainer_pad_token_id(trainer),
            content_only=settings.content_only,
        )  # fmt: skip
        layer, tokens = next(iter(captured.items()))
        if self.sae is None:
            self.sae = self._sae(args, state, tokens)
        result = sae_report(self.sae, tokens)
        values = result.to_dict()
        for key in ("explained_variance", "l0", "dead_fraction"):
            logs[f"{KEY_PREFIX}/sae_{key}"] = values[key]
        logs[f"{KEY_PREFIX}/sae_neuron_features"] = values["mean_neuron_features"]
        return {"layer": layer, **values}

    def _sae(self, args, state, tokens):
        """The SAE that scores every measurement: ``sae.sae`` if given; on a resumed run, the one saved at its step 0;
        else one trained now, by the main process alone, saved, and loaded by the other processes."""
        settings, trainer = self.sae_settings, self.trainer
        if settings.sae is not None:
            return settings.train(tokens)
        folder = settings.output_dir or os.path.join(args.output_dir, "monosemanticity_sae")
        if state.global_step > 0 and os.path.isfile(os.path.join(folder, "cfg.json")):
            return load_sae(folder, device=settings.device)  # a resumed run: the SAE of its step 0
        if state.global_step > 0:
            logger.warning(
                f"MonosemanticityCallback: the SAE is trained at step {state.global_step}, on the model as trained so "
                "far, not on the model before training (measure at step 0, `measure_on_train_begin=True`, for that)"
            )
        sae = None
        if trainer.is_world_process_zero():
            sae = dataclasses.replace(settings, output_dir=folder).train(tokens)
        trainer.accelerator.wait_for_everyone()
        return sae if sae is not None else load_sae(folder, device=settings.device)

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
