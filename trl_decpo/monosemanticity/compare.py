# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""A base model against tuned models (checkpoints, PEFT adapters or loaded models) on the same probes: FD, its
control, the participation ratio and sparsity per layer, their changes against the base, and the weight proxy's
(``trl-decpo compare``; paired bootstrap intervals: :func:`trl_decpo.evaluation.proxy_differences`).

    from trl_decpo.monosemanticity import compare_monosemanticity

    comparison = compare_monosemanticity("base-model", ["out/dpo", "out/decpo-adapter"], prompts)
    print(comparison.to_text())
    comparison.save("out/compare")  # compare.json, compare.csv, compare.png
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn
from transformers.utils import logging

from ..independent import SAEReport, SAESettings, SparseProbingResult, sae_report, sparse_probing
from ..sources import check_models
from .loading import (
    is_adapter_folder,
    load_model_and_adapter,
    name_models,
    note_other_base,
    source_name,
    tokenizer_for,
)
from .measure import MonosemanticityReport, measure_monosemanticity
from .neurons import WeightProxyReport, weight_proxy
from .probes import ProbeSet, prepare_probes
from .tables import Table, report_summary, save_results
from .tokens import check_sae_layer, token_activations


logger = logging.get_logger(__name__)

# columns of the table, after model and layer: each model's values, then its changes against the base
VALUE_COLUMNS = ("relative_depth", "fd", "control", "participation_ratio", "sparsity")
CHANGE_COLUMNS = ("fd_relative_change", "control_relative_change", "sparsity_minus_base")


def relative_change(tuned: float, base: float) -> float:
    """``(tuned - base) / |base|``; NaN for a zero base (the control of 2 prompts is always 0)."""
    return (tuned - base) / abs(base) if base != 0 else float("nan")


@dataclass
class MonosemanticityComparison:
    """The measurements of a base model (first) and tuned models on the same probes, and the weight proxy of each
    tuned model against the base where it applies (``weight_proxy_note`` says why not, otherwise)."""

    reports: dict[str, MonosemanticityReport]
    weight_proxy: dict[str, WeightProxyReport] = field(default_factory=dict)
    weight_proxy_note: str | None = None
    sources: dict[str, str | None] = field(default_factory=dict)  # name -> the path or Hub id it was loaded from
    probing: dict[str, dict[int, SparseProbingResult]] = field(default_factory=dict)  # name -> layer -> result
    sae: dict[str, SAEReport] = field(default_factory=dict)  # name -> the SAE's report on its token activations
    sae_layer: int | None = None

    @property
    def names(self) -> list[str]:
        return list(self.reports)

    @property
    def base(self) -> str:
        return self.names[0]

    def changes(self, name: str, layer: int) -> dict[str, float]:
        """``name``'s changes against the base at ``layer``: relative for FD and the control, a difference for
        sparsity, and the weight proxy's relative change when it was computed."""
        report, base = self.reports[name], self.reports[self.base]
        out = {
            "fd_relative_change": relative_change(report.fd[layer], base.fd[layer]),
            "control_relative_change": relative_change(report.control[layer], base.control[layer]),
            "sparsity_minus_base": report.sparsity[layer] - base.sparsity[layer],
        }
        if name in self.weight_proxy:
            out["weight_proxy_relative_change"] = self.weight_proxy[name].change.get(layer)
        return out

    def table(self) -> Table:
        """One row per model and layer: the values, then the changes against the base (the CLI's CSV)."""
        extra = ["weight_proxy_relative_change"] if self.weight_proxy else []
        probing = ["probe_k1_accuracy", "probe_dense_accuracy"] if self.probing else []
        headers = ["model", "layer", *VALUE_COLUMNS, *CHANGE_COLUMNS, *extra, *probing]
        rows = []
        for name, report in self.reports.items():
            for entry in report.to_dict()["layers"]:
                changes = self.changes(name, entry["layer"])
                changes.setdefault("weight_proxy_relative_change", "")
                rows.append([name, entry["layer"], *(entry[k] for k in VALUE_COLUMNS)])
                rows[-1] += [changes[k] for k in (*CHANGE_COLUMNS, *extra)]
                if probing:
                    result = self.probing[name][entry["layer"]]
                    rows[-1] += [result.accuracy.get(1, ""), result.accuracy[None]]
        return Table(headers, rows)

    def sae_table(self) -> Table | None:
        """One row per model: what the SAE says of its token activations at ``sae_layer`` (``None`` without an SAE)."""
        if not self.sae:
            return None
        headers = ["model", "explained_variance", "l0", "dead_fraction", "mean_neuron_features"]
        return Table(headers, [[name, *list(r.to_dict().values())[:4]] for name, r in self.sae.items()])

    def to_text(self) -> str:
        """What ``trl-decpo compare`` prints: the probes, the table and each model's means over the layers."""
        base = self.reports[self.base]
        lines = [f"base {self.base}; {base.num_prompts} prompts, site {base.site}, pooling {base.pooling}"]
        lines += [self.table().to_text()] + [f"{n}: {report_summary(r)}" for n, r in self.reports.items()]
        if self.sae:
            rows = next(iter(self.sae.values())).num_rows
            lines += [f"SAE at layer {self.sae_layer}, scored on {rows} token activations per model:"]
            lines += [self.sae_table().to_text()]
        return "\n".join(lines + ([self.weight_proxy_note] if self.weight_proxy_note else []))

    def to_dict(self) -> dict:
        """``compare.json``: the base's name, the sources, each model's measurement and weight proxy."""
        return {
            "base": self.base,
            "models": {name: self.sources.get(name) for name in self.names},
            "measurements": {name: report.to_dict() for name, report in self.reports.items()},
            "weight_proxy": {name: report.to_dict() for name, report in self.weight_proxy.items()} or None,
            "weight_proxy_note": self.weight_proxy_note,
            "sparse_probing": {
                name: {str(layer): result.to_dict() for layer, result in layers.items()}
                for name, layers in self.probing.items()
            }
            or None,
            "sae": {"layer": self.sae_layer, **{name: r.to_dict() for name, r in self.sae.items()}}
            if self.sae
            else None,
        }

    def plot(self, path: str, title: str | None = None) -> str:
        """Each proxy against relative depth, one line per model, with the changes against the base."""
        from .plotting import plot_depth_profiles

        base = self.reports[self.base]
        proxies = {name: report.to_dict() for name, report in self.weight_proxy.items()} or None
        title = title or f"{base.site}, {base.num_prompts} prompts"
        profiles = {name: report.to_dict() for name, report in self.reports.items()}
        return plot_depth_profiles(profiles, path, base=self.base, weight_proxy=proxies, title=title)

    def paper_figures(self, output_dir: str, labels: Sequence[str] = ("DPO", "DecPO")) -> list[str]:
        """The paper's figures for the base and two tuned models (``plot_paper_figures``); returns their paths."""
        from .plotting import plot_paper_figures

        if len(self.reports) != 3:
            raise ValueError(f"the paper's figures need a base and two tuned models, got {self.names}")
        os.makedirs(output_dir, exist_ok=True)
        return plot_paper_figures(self.to_dict(), output_dir, labels)

    def save(self, output_dir: str, plot: bool = True) -> list[str]:
        """Write ``compare.json``, ``compare.csv`` and (``plot``) ``compare.png`` into ``output_dir``."""
        return save_results(output_dir, "compare", self.to_dict(), self.table(), self.plot if plot else None)


def compare_monosemanticity(
    base: str | nn.Module,
    models: Mapping[str, str | nn.Module] | Sequence[str | nn.Module],
    prompts: Sequence | ProbeSet,
    tokenizer=None,
    *,
    base_name: str | None = None,
    layers: Sequence[int] | None = None,
    site: str | None = None,
    pooling: str = "auto",
    batch_size: int = 8,
    max_length: int | None = 512,
    weight_proxy_top_k: int = 100,
    model_args=None,
    device: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = False,
    labels: Sequence | None = None,
    probing_ks: Sequence[int | None] | None = None,
    sae: SAESettings | None = None,
) -> MonosemanticityComparison:
    """Measure ``base`` and each of ``models`` on the same probes (:func:`measure_monosemanticity`), and the weight
    proxy of each model against the base.

    Args:
        base: the base model, loaded or as a model folder / Hub id.
        models: tuned models, as a mapping from names to models, or a list (named after their folders): loaded models,
            model folders, Hub ids, or PEFT adapter folders, which are applied to (a copy of) ``base``.
        prompts: the probes (strings, chat messages or token ids; see :func:`prepare_probes`), tokenized once with
            ``tokenizer`` (a tokenizer or a folder to load it from; default: ``base``'s, when it is a path) and pooled
            as ``pooling`` says, so that every model sees the same inputs and rows; or a :class:`ProbeSet` already
            prepared.
        layers, site, batch_size, max_length, progress: as :func:`measure_monosemanticity` (``max_length`` keeps the
            last tokens of each prompt).
        weight_proxy_top_k: neurons whose input weights changed most (the weight proxy needs MLP input biases: on other
            models ``weight_proxy_note`` says why it is missing).
        model_args, device, trust_remote_code: how models given as paths load (:func:`load_model_and_adapter`).
        labels: one concept label per prompt: each model's rows at each layer are probed (:func:`sparse_probing`,
            ``probing_ks`` its ``ks``, split seed 0), the same split for every model.
        sae: an SAE trained on the base model's token activations at ``sae.layer`` (or ``sae.sae``), which scores
            every model's token activations of the same prompts there (:func:`sae_report`).

    Models given as paths are loaded one at a time and released after their measurement.
    """
    base_name, named = name_models(base, models, base_name)
    if labels is not None and len(labels) != len(prompts):
        raise ValueError(f"`labels` has {len(labels)} entries for {len(prompts)} prompts: one label per prompt")
    check_models([base, *named.values()], getattr(model_args, "model_revision", None))  # before any loads
    if not (isinstance(prompts, ProbeSet) and tokenizer is None and isinstance(base, nn.Module)):  # else none needed
        tokenizer = tokenizer_for(tokenizer, base, trust_remote_code)
    probes = prompts if isinstance(prompts, ProbeSet) else prepare_probes(prompts, tokenizer, max_length, pooling)
    load = dict(model_args=model_args, device=device, trust_remote_code=trust_remote_code)
    base_model = base if isinstance(base, nn.Module) else load_model_and_adapter(base, **load)
    if sae is not None:
        check_sae_layer(base_model, sae.layer, site)
    measure = dict(tokenizer=tokenizer, layers=layers, site=site, batch_size=batch_size, max_length=None)
    reports = {base_name: measure_monosemanticity(base_model, probes, progress=progress, **measure)}
    comparison = MonosemanticityComparison(reports, sources={base_name: source_name(base)})
    independent = dict(labels=labels, probing_ks=probing_ks, sae=sae, probes=probes, tokenizer=tokenizer, site=site)
    independent["trained"] = _independent_measures(comparison, base_name, base_model, batch_size, **independent)
    for name, entry in named.items():
        if isinstance(entry, nn.Module):
            model = entry
        elif is_adapter_folder(entry):  # on a copy of BASE: the weight proxy compares the two
            note_other_base(entry, base)
            copied = copy.deepcopy(base_model) if isinstance(base, nn.Module) else base
            model = load_model_and_adapter(entry, base=copied, **load)
        else:
            model = load_model_and_adapter(entry, **load)
        comparison.sources[name] = source_name(entry)
        reports[name] = measure_monosemanticity(model, probes, progress=progress, **measure)
        _independent_measures(comparison, name, model, batch_size, **independent)
        if reports[name].layers != reports[base_name].layers:
            raise ValueError(
                f"{name} has layers {reports[name].layers} at the site, the base has {reports[base_name].layers}: "
                "compared models need the same depth (or the same `layers`)"
            )
        if comparison.weight_proxy_note is None:
            try:
                comparison.weight_proxy[name] = weight_proxy(
                    model, base_model, layers=reports[name].layers, top_k=weight_proxy_top_k
                )
            except ValueError as err:
                comparison.weight_proxy, comparison.weight_proxy_note = {}, f"weight proxy not computed: {err}"
        del model
    return comparison


def _independent_measures(
    comparison, name, model, batch_size, labels, probing_ks, sae, probes, tokenizer, site, trained=None
):
    """Sparse probing of ``name``'s rows (with ``labels``) and the SAE's report on its token activations (with
    ``sae``); the first call (the base) trains the SAE, and returns it for the others."""
    report = comparison.reports[name]
    if labels is not None:
        comparison.probing[name] = {
            layer: sparse_probing(report.rows(layer), labels, ks=probing_ks) for layer in report.layers
        }
    if sae is None:
        return None
    captured = token_activations(
        model, probes, tokenizer, [sae.layer], site, batch_size, None, sae.max_rows, content_only=sae.content_only
    )
    comparison.sae_layer, tokens = next(iter(captured.items()))
    trained = sae.train(tokens) if trained is None else trained
    comparison.sae[name] = sae_report(trained, tokens)
    return trained
