# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Activation capture: which module to hook, hooks that capture one forward pass, and pooling into rows.

Three pieces, all independent of the Trainer:

* :func:`resolve_sites` finds the hooked module of each requested decoder layer (``model.layers[i].mlp.up_proj`` for
  Llama-family models, the MLP activation for GPT-2 and GPT-NeoX, or any user-given ``site``), through PEFT, quantised
  layers and DDP/DeepSpeed wrappers, and fails with the list of what exists when nothing matches.
* :func:`build_row_index` turns the batch masks (right or left padding, or packed ``position_ids``) into the token
  indices that make the rows: the last real token of each sequence, the mean over its completion tokens, or every
  completion token.
* :class:`ActivationCapture` registers forward hooks for exactly the duration of a ``with`` block and keeps only the
  first call of each hooked module inside it (the policy forward); later calls (the reference forward of a PEFT model
  with its adapter disabled, an extra forward) are counted and ignored. Hooks are always removed on exit, even when
  the block raises, so nothing is ever left on a saved or pushed model.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


POOLING_CHOICES = ("last", "mean", "tokens")
SEQUENCES_CHOICES = ("chosen", "rejected", "both")

# Default site per architecture (METHOD.md section 1), tried in this order inside decoder layer 0. Gated MLPs (Llama,
# Mistral, Qwen2, Gemma, SmolLM2): the output of `up_proj`. Non-gated MLPs whose nonlinearity is a module (GPT-2,
# GPT-NeoX, Falcon): its output. Others whose nonlinearity is a plain function (OPT, Phi): the input of the second
# projection, which is the hidden activation after the nonlinearity.
DEFAULT_SITES = ("mlp.up_proj", "mlp.act", "mlp.fc2:input", "fc2:input")

_HOOK_MARKER = "_trl_decpo_hook"


@dataclass(frozen=True)
class Site:
    """A parsed site: a module path inside a decoder layer and whether its output or its input is captured."""

    path: str
    capture_input: bool = False

    @classmethod
    def parse(cls, spec: str, field: str = "decorrelation_site") -> Site:
        """Parse ``"mlp.up_proj"`` (output), ``"mlp.up_proj:output"`` or ``"mlp.down_proj:input"``.

        ``field`` names the option in error messages."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"`{field}` must be a non-empty module path, got {spec!r}")
        path, _, kind = spec.strip().partition(":")
        kind = kind or "output"
        if kind not in ("input", "output"):
            raise ValueError(
                f"`{field}` {spec!r}: the part after ':' must be 'input' or 'output', got {kind!r}"
            )
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[\w]+)*", path):
            raise ValueError(f"`{field}` {spec!r}: {path!r} is not a dotted module path like 'mlp.up_proj'")
        return cls(path=path, capture_input=kind == "input")

    def __str__(self) -> str:
        return f"{self.path}:{'input' if self.capture_input else 'output'}"


@dataclass(frozen=True)
class ResolvedSite:
    layer: int  # non-negative index into the decoder layer list
    prefix: str  # name of the decoder layer list, e.g. "base_model.model.model.layers"
    name: str  # full module name, e.g. "base_model.model.model.layers.3.mlp.up_proj"
    module: nn.Module
    site: Site


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DeepSpeed / DataParallel style wrappers, which keep the real model in ``.module``."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "config"):
        model = model.module
    return model


# Module-name segments that wrappers insert without changing the model's structure: FSDP1 (`FullyShardedDataParallel`
# keeps the wrapped module in `_fsdp_wrapped_module`), activation checkpointing wrappers (`_checkpoint_wrapped_module`)
# and `torch.compile` (`_orig_mod`). Names are matched with them removed.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
_WRAPPER_RE = re.compile(r"(?:^|\.)(?:" + "|".join(WRAPPER_SEGMENTS) + r")(?=\.|$)")


def canonical_name(name: str) -> str:
    """A module or parameter name without wrapper segments (``layers.0._fsdp_wrapped_module.mlp`` -> ``layers.0.mlp``)."""
    return _WRAPPER_RE.sub("", name).lstrip(".")


def _site_groups(model: nn.Module, site: Site) -> dict[str, dict[int, tuple[str, nn.Module]]]:
    """All modules named ``<prefix>.<index>.<site.path>`` (wrapper segments ignored), grouped by prefix (the decoder
    layer list)."""
    pattern = re.compile(r"^(?:(.*)\.)?(\d+)\." + re.escape(site.path) + "$")
    groups: dict[str, dict[int, tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules():
        match = pattern.match(canonical_name(name))
        if match and name.rsplit(".", 1)[-1] not in WRAPPER_SEGMENTS:
            prefix = match.group(1) or ""
            groups.setdefault(prefix, {})[int(match.group(2))] = (name, module)
    return groups


def _layer_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    return {canonical_name(name): m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0}


def _describe_layer0(model: nn.Module) -> str:
    """The module paths inside the first decoder layer, for error messages."""
    lists = _layer_lists(model)
    if not lists:
        return "(the model has no nn.ModuleList of layers)"
    prefix, layers = max(lists.items(), key=lambda item: len(item[1]))
    names = [name for name, _ in layers[0].named_modules() if name and "lora_" not in name and "base_layer" not in name]
    shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
    return f"modules inside `{prefix}.0`: {shown}"


def default_site(model: nn.Module, field: str = "decorrelation_site") -> Site:
    """The site METHOD.md section 1 prescribes for this architecture (see :data:`DEFAULT_SITES`)."""
    for spec in DEFAULT_SITES:
        site = Site.parse(spec)
        if _site_groups(model, site):
            return site
    for spec in DEFAULT_SITES:
        site = Site.parse(spec)
        if _hidden_by_modules_to_save(model, site):
            raise ValueError(_site_error(model, site, {}, field))
    raise ValueError(
        f"Could not choose a default `{field}` for this architecture: none of "
        f"{list(DEFAULT_SITES)} exists inside its decoder layers. Set `{field}` to a module path inside a "
        f"decoder layer (append ':input' to hook a module's input). {_describe_layer0(model)}"
    )


def num_layers_at_site(model: nn.Module, site: Site, field: str = "decorrelation_site") -> int:
    groups = _site_groups(unwrap_model(model), site)
    if len(groups) != 1:
        raise ValueError(_site_error(model, site, groups, field))
    ((prefix, found),) = groups.items()
    container = _layer_lists(unwrap_model(model)).get(prefix) if prefix else unwrap_model(model)
    return len(container) if isinstance(container, nn.ModuleList) else max(found) + 1


def _hidden_by_modules_to_save(model: nn.Module, site: Site) -> tuple[str, str] | None:
    """(wrapped parent path, path of the trained copy of the site) when a PEFT ``modules_to_save`` wrapper of a parent
    of the site moved it under ``modules_to_save.<adapter>``."""
    parts = site.path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent, rest = ".".join(parts[:cut]), ".".join(parts[cut:])
        for name, _ in model.named_modules():
            match = re.search(rf"\d+\.{re.escape(parent)}\.modules_to_save\.([^.]+)\.{re.escape(rest)}$", name)
            if match:
                return parent, f"{parent}.modules_to_save.{match.group(1)}.{rest}"
    return None


def _site_error(model: nn.Module, site: Site, groups: dict, field: str = "decorrelation_site") -> str:
    if not groups:
        hidden = _hidden_by_modules_to_save(unwrap_model(model), site)
        if hidden:
            return (
                f"`{field}` {site.path!r} is hidden by PEFT's `modules_to_save`, which wrapped {hidden[0]!r}: the copy "
                f"that trains is {hidden[1]!r} inside each layer. Set `{field}` to {hidden[1]!r}, or put the hooked "
                "module itself (not its parent) in `modules_to_save`."
            )
        return (
            f"`{field}` {site.path!r} matches no module inside the decoder layers of "
            f"{type(unwrap_model(model)).__name__}. {_describe_layer0(unwrap_model(model))}. Allowed: any of these "
            "paths, optionally followed by ':input' or ':output'."
        )
    return (
        f"`{field}` {site.path!r} is ambiguous: it exists under several layer lists "
        f"{sorted(groups)}; this model has more than one stack of layers (e.g. a vision tower)."
    )


def resolve_sites(
    model: nn.Module,
    layers: list[int] | None,
    site: str | Site | None = None,
    fields: tuple[str, str] = ("decorrelation_layers", "decorrelation_site"),
) -> list[ResolvedSite]:
    """The hooked module of each requested layer.

    Args:
        model: any causal LM, bare or wrapped by PEFT (``base_model.model...``), DDP or DeepSpeed.
        layers: decoder layer indices, negative ones counting from the end; ``None`` means the single layer at about a
            third of the depth (``num_layers // 3``, layer 10 of 32 for Llama-2-7B, as in the paper's runs).
        site: a module path inside a decoder layer (``"mlp.up_proj"``, ``"mlp.down_proj:input"``), or ``None`` for
            :func:`default_site`.

        fields: the option names ``(layers, site)`` that error messages name.

    Raises:
        ValueError: listing what exists when the site matches nothing, or the valid range when a layer is out of it.
    """
    layers_field, site_field = fields
    bare = unwrap_model(model)
    if site is None:
        site = default_site(bare, site_field)
    elif not isinstance(site, Site):
        site = Site.parse(site, site_field)
    groups = _site_groups(bare, site)
    if len(groups) != 1:
        raise ValueError(_site_error(bare, site, groups, site_field))
    ((prefix, found),) = groups.items()
    n_layers = num_layers_at_site(bare, site, site_field)
    if layers is None:
        layers = [n_layers // 3]
    if len(layers) == 0:
        raise ValueError(f"`{layers_field}` must not be empty; use None for the default layer")
    resolved = []
    for requested in layers:
        if isinstance(requested, bool) or not isinstance(requested, int):
            raise ValueError(f"`{layers_field}` must hold integers, got {requested!r}")
        index = requested + n_layers if requested < 0 else requested
        if not 0 <= index < n_layers:
            raise ValueError(
                f"`{layers_field}` entry {requested} is out of range: the model has {n_layers} decoder layers, "
                f"so allowed values are {-n_layers}..{n_layers - 1}"
            )
        if index not in found:
            raise ValueError(f"decoder layer {index} has no module {site.path!r} (found in layers {sorted(found)})")
        if index in {r.layer for r in resolved}:
            raise ValueError(f"`{layers_field}` names layer {index} twice ({layers})")
        name, module = found[index]
        resolved.append(ResolvedSite(layer=index, prefix=prefix, name=name, module=module, site=site))
    return resolved


# ----------------------------------------------------------------------------------------------------------------------
# Rows: which token positions make the rows of z
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class RowIndex:
    """Flat token indices (into ``acts.reshape(-1, d)``) that make the rows of ``z`` for one batch."""

    pooling: str
    seq_len: int  # T of the input ids; activations are aligned on the right (prompt-learning PEFT prepends tokens)
    token_index: torch.Tensor  # [m] flat indices of the tokens used
    segment: torch.Tensor | None = None  # [m] row of each token ("mean" only)
    counts: torch.Tensor | None = None  # [rows] tokens per row ("mean" only)
    num_rows: int = 0
    max_rows: int | None = None

    def pool(self, acts: torch.Tensor) -> torch.Tensor:
        """``[B, T', d]`` activations to ``[rows, d]``."""
        if acts.dim() == 2:  # some kernels flatten the batch
            acts = acts.unsqueeze(0)
        if acts.shape[1] != self.seq_len:
            acts = acts[:, -self.seq_len :]
        flat = acts.reshape(-1, acts.shape[-1])
        picked = flat.index_select(0, self.token_index)
        if self.pooling == "mean":
            summed = torch.zeros(self.num_rows, flat.shape[-1], dtype=flat.dtype, device=flat.device)
            summed = summed.index_add(0, self.segment, picked)
            return summed / self.counts.to(summed.dtype).unsqueeze(1)
        return picked


def _sequence_ids(
    batch: int,
    seq_len: int,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, int]:
    """Per flat token: the index of its sequence, or -1 for padding; and the number of sequences.

    Padded batches: one sequence per row, real tokens from ``attention_mask`` (either padding side). Packed batches
    (``padding_free``: ``position_ids`` restart at 0 more often than once per row, no attention mask): a new sequence
    starts wherever ``position_ids == 0``, in row-major order.
    """
    if position_ids is not None and attention_mask is None:
        starts = position_ids.reshape(-1) == 0
        num_sequences = int(starts.sum())  # one host sync, packed batches only
        if num_sequences > batch:
            return torch.cumsum(starts.long(), 0) - 1, num_sequences
    rows = torch.arange(batch, device=device).unsqueeze(1).expand(batch, seq_len)
    if attention_mask is not None:
        rows = rows.masked_fill(attention_mask == 0, -1)
    return rows.reshape(-1), batch


def build_row_index(
    pooling: str,
    sequences: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    max_rows: int | None = None,
) -> RowIndex:
    """The token positions that make the rows, from the batch of a preference trainer.

    The batch holds ``[chosen; rejected]``: the first half of its sequences are the chosen ones. ``pooling="last"``
    takes the last real (non-pad) token of each selected sequence; ``"mean"`` averages its completion tokens (all real
    tokens when there is no ``completion_mask``; a sequence without any gives a zero row); ``"tokens"`` makes every
    completion token a row, evenly subsampled down to ``max_rows`` when there are more.
    """
    if pooling not in POOLING_CHOICES:
        raise ValueError(f"`decorrelation_pooling` must be one of {list(POOLING_CHOICES)}, got {pooling!r}")
    if sequences not in SEQUENCES_CHOICES:
        raise ValueError(f"`decorrelation_sequences` must be one of {list(SEQUENCES_CHOICES)}, got {sequences!r}")
    batch, seq_len = input_ids.shape
    device = input_ids.device
    if pooling == "last" and sequences == "both" and position_ids is None:
        # Padded batch, one sequence per row: the last real token is the largest position with a nonzero mask.
        positions = torch.arange(seq_len, device=device)
        last = positions.expand(batch, seq_len) if attention_mask is None else positions * (attention_mask != 0)
        token_index = torch.arange(batch, device=device) * seq_len + last.amax(1)
        return RowIndex(pooling, seq_len, token_index, num_rows=batch)
    seq_ids, num_sequences = _sequence_ids(batch, seq_len, attention_mask, position_ids, device)
    if sequences == "both":
        first, last = 0, num_sequences
    else:
        if num_sequences % 2:
            raise ValueError(
                f"`decorrelation_sequences={sequences!r}` needs a [chosen; rejected] batch with an even number of "
                f"sequences, got {num_sequences}"
            )
        half = num_sequences // 2
        first, last = (0, half) if sequences == "chosen" else (half, num_sequences)
    num_rows = last - first
    selected = (seq_ids >= first) & (seq_ids < last)
    positions = torch.arange(seq_ids.numel(), device=device)

    if pooling == "last":
        last_pos = torch.full((num_sequences,), -1, dtype=torch.long, device=device)
        last_pos = last_pos.scatter_reduce(0, seq_ids.clamp_min(0)[selected], positions[selected], "amax")
        return RowIndex(pooling, seq_len, last_pos[first:last].clamp_min(0), num_rows=num_rows)

    token_mask = selected
    if completion_mask is not None:
        token_mask = token_mask & (completion_mask.reshape(-1) != 0)
    if pooling == "mean":
        token_index = positions[token_mask]
        segment = seq_ids[token_mask] - first
        counts = torch.zeros(num_rows, dtype=torch.long, device=device).index_add(
            0, segment, torch.ones_like(segment)
        )
        return RowIndex(pooling, seq_len, token_index, segment, counts.clamp_min(1), num_rows=num_rows)

    token_index = positions[token_mask]
    if max_rows is not None and token_index.numel() > max_rows:
        keep = torch.linspace(0, token_index.numel() - 1, max_rows, device=device).round().long()
        token_index = token_index[keep]
    return RowIndex(pooling, seq_len, token_index, num_rows=token_index.numel(), max_rows=max_rows)


# ----------------------------------------------------------------------------------------------------------------------
# Hooks
# ----------------------------------------------------------------------------------------------------------------------


def _identity(tensor):
    return tensor


class ActivationCapture:
    """Captures pooled rows at the resolved sites during the first forward pass inside :meth:`capture`.

    ``stats`` counts, over the object's life, the hook calls that were captured (``"captured"``) and those ignored
    because their module had already been captured in the same block (``"ignored"``: e.g. the reference forward of a
    PEFT model with its adapter disabled).
    """

    def __init__(self, sites: list[ResolvedSite]):
        if not sites:
            raise ValueError("ActivationCapture needs at least one site")
        self.sites = sites
        self.stats: Counter = Counter()
        self._active = False

    @contextmanager
    def capture(self, row_index: RowIndex):
        """Hooks live only inside this block; yields ``{layer: rows}``, filled by the first forward of the block."""
        if self._active:
            raise RuntimeError("ActivationCapture.capture() is not re-entrant")
        rows: dict[int, torch.Tensor] = {}
        handles = []
        self._active = True
        try:
            for resolved in self.sites:
                hook = self._make_hook(resolved, row_index, rows)
                if resolved.site.capture_input:
                    handles.append(resolved.module.register_forward_pre_hook(hook, with_kwargs=True))
                else:
                    handles.append(resolved.module.register_forward_hook(hook))
            yield rows
        finally:
            for handle in handles:
                handle.remove()
            self._active = False

    def _make_hook(self, resolved: ResolvedSite, row_index: RowIndex, rows: dict[int, torch.Tensor]):
        layer = resolved.layer
        stats = self.stats

        def take(tensor):
            if layer in rows:
                stats["ignored"] += 1
                return
            if isinstance(tensor, (tuple, list)):
                tensor = tensor[0]
            # The pooling ops run inside the checkpointed region of the layer (non-reentrant activation
            # checkpointing). Identity saved-tensor hooks keep what they save out of the checkpoint's bookkeeping, so
            # the recomputation during backward, which runs without this hook, saves the same tensors as the original
            # forward.
            if torch.is_grad_enabled():
                with torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
                    rows[layer] = row_index.pool(tensor)
            else:  # nothing is saved for backward: no bookkeeping needed (measurement forwards)
                rows[layer] = row_index.pool(tensor)
            stats["captured"] += 1

        if resolved.site.capture_input:

            def pre_hook(module, args, kwargs):
                tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                take(tensors[0])

            setattr(pre_hook, _HOOK_MARKER, True)
            return pre_hook

        def hook(module, args, output):
            take(output)

        setattr(hook, _HOOK_MARKER, True)
        return hook


def count_decpo_hooks(model: nn.Module) -> int:
    """How many forward (pre-)hooks registered by trl-decpo are on ``model`` and its submodules."""
    count = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            count += sum(1 for fn in hooks.values() if getattr(fn, _HOOK_MARKER, False))
    return count
