# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Sites: which module of each decoder layer is hooked.

:func:`resolve_sites` finds the hooked module of each requested decoder layer (``model.layers[i].mlp.up_proj`` for
Llama-family models, the MLP activation for GPT-2 and GPT-NeoX, or any user-given ``site``), through PEFT, quantised
layers and DDP / DeepSpeed / FSDP wrappers, and fails with the list of what exists when nothing matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from accelerate.utils import extract_model_from_parallel
from torch import nn

from ..utils import is_int


# Default site per architecture (docs/method.md, section 2), tried in this order inside decoder layer 0. Gated MLPs (Llama,
# Mistral, Qwen2, Gemma, SmolLM2): the output of `up_proj`. Non-gated MLPs whose nonlinearity is a module (GPT-2,
# GPT-NeoX, Falcon): its output. Others whose nonlinearity is a plain function (OPT, Phi): the input of the second
# projection, which is the hidden activation after the nonlinearity.
DEFAULT_SITES = ("mlp.up_proj", "mlp.act", "mlp.fc2:input", "fc2:input")


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
            raise ValueError(f"`{field}` {spec!r}: the part after ':' must be 'input' or 'output', got {kind!r}")
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
    """The model inside DDP / DataParallel / DeepSpeed / FSDP containers (``accelerate``'s
    ``extract_model_from_parallel``); a ``torch.compile`` wrapper is kept (its names are matched without ``_orig_mod``)."""
    return extract_model_from_parallel(model)


# Module-name segments that wrappers insert without changing the model's structure: FSDP1 (`FullyShardedDataParallel`
# keeps the wrapped module in `_fsdp_wrapped_module`), activation checkpointing wrappers (`_checkpoint_wrapped_module`)
# and `torch.compile` (`_orig_mod`). Names are matched with them removed.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
_WRAPPER_RE = re.compile(r"(?:^|\.)(?:" + "|".join(WRAPPER_SEGMENTS) + r")(?=\.|$)")


def canonical_name(name: str) -> str:
    """A module or parameter name without wrapper segments (``layers.0._fsdp_wrapped_module.mlp`` -> ``layers.0.mlp``)."""
    return _WRAPPER_RE.sub("", name).lstrip(".")


def site_groups(model: nn.Module, site: Site) -> dict[str, dict[int, tuple[str, nn.Module]]]:
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
    return {
        canonical_name(name): m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
    }


def _describe_layer0(model: nn.Module) -> str:
    """The module paths inside the first decoder layer, for error messages."""
    lists = _layer_lists(model)
    if not lists:
        return "(the model has no nn.ModuleList of layers)"
    prefix, layers = max(lists.items(), key=lambda item: len(item[1]))
    names = [
        name for name, _ in layers[0].named_modules() if name and "lora_" not in name and "base_layer" not in name
    ]
    shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
    return f"modules inside `{prefix}.0`: {shown}"


def default_site(model: nn.Module, field: str = "decorrelation_site") -> Site:
    """The documented default site for this architecture (see :data:`DEFAULT_SITES`)."""
    for spec in DEFAULT_SITES:
        site = Site.parse(spec)
        if site_groups(model, site):
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
    groups = site_groups(unwrap_model(model), site)
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
    groups = site_groups(bare, site)
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
        if not is_int(requested):
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


def resolve_measurement_sites(
    model: nn.Module, layers: list[int] | None = None, site: str | Site | None = None
) -> list[ResolvedSite]:
    """The sites a measurement reads: :func:`resolve_sites` with every decoder layer by default, its errors naming the
    measurement's options (``layers``, ``site``)."""
    bare = unwrap_model(model)
    if site is None:
        site = default_site(bare, "site")
    elif not isinstance(site, Site):
        site = Site.parse(site, "site")
    if layers is None:
        layers = list(range(num_layers_at_site(bare, site, "site")))
    return resolve_sites(bare, list(layers), site, fields=("layers", "site"))
