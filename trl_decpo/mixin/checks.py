# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Checks that refuse, before any training step, a DecPO run whose penalty could not work (and say how to fix it)."""

from __future__ import annotations

from ..capture import ResolvedSite, canonical_name


PAPER_FORMATS = "toxicity, cognitive_reframing, sycophancy"


def check_preference_columns(dataset, name: str) -> None:
    """Refuse, before any processing, a dataset that is not a preference dataset (DPOTrainer would fail later with a
    bare ``KeyError``): TRL 1.16 needs ``chosen`` and ``rejected`` (with ``prompt``, or an implicit prompt it
    extracts as their shared prefix)."""
    if dataset is None:
        return
    if isinstance(dataset, dict):
        if name == "train_dataset":
            raise ValueError(
                f"`train_dataset` must be one dataset (a split), got a dict of splits {sorted(dataset)}; "
                "pass e.g. `dataset['train']`"
            )
        for key, part in dataset.items():
            check_preference_columns(part, f"{name}[{key!r}]")
        return
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # an IterableDataset without known features, a list of dicts, a torch dataset: peek
        try:
            first = next(iter(dataset))
        except (StopIteration, TypeError):
            return
        columns = list(first) if isinstance(first, dict) else None
    if columns is None or {"chosen", "rejected"} <= set(columns):
        return
    raise ValueError(
        f"`{name}` is not a preference dataset: it needs the columns 'prompt', 'chosen' and 'rejected' ('prompt' may "
        f"be left implicit in 'chosen' / 'rejected'); its columns are {list(columns)}. Rename them, or map the rows "
        f"(the `trl-decpo dpo --dataset_format` option does it for the paper's tasks: {PAPER_FORMATS})."
    )


def check_gradient_path(model, sites: list[ResolvedSite]) -> None:
    """Refuse a setup (usually PEFT) whose trainable parameters all sit after the hooked layers: no gradient of the
    penalty could reach a weight."""
    last = max(site.layer for site in sites)
    head = f"{sites[0].prefix}." if sites[0].prefix else ""
    upstream = False
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = canonical_name(name)
        index = name[len(head) :].split(".", 1)[0]
        if not name.startswith(head) or not index.isdigit():
            upstream = upstream or any(key in name for key in ("embed", "wte", "wpe"))
            continue
        upstream = upstream or int(index) <= last
    if not upstream:
        raise ValueError(
            f"No trainable parameter lies at or before decoder layer {last}, where the decorrelation penalty is "
            f"computed ({[s.name for s in sites]}), so it could not change any weight. Make the PEFT "
            "`target_modules` / `layers_to_transform` cover layers at or before it, or choose later "
            "`decorrelation_layers`."
        )
