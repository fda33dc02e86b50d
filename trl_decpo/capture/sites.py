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


# The default site is a rule applied to each decoder layer (docs/method.md, section 2), in this order:
# 1. today's defaults where they exist: the output of a gated MLP's `mlp.up_proj` (Llama, Mistral, Qwen, Gemma: the
#    paper's choice), the MLP's activation module `mlp.act` (GPT-2, GPT-NeoX, GPT-J, Falcon, Starcoder2);
# 2. the MLP's hidden activation where a module boundary exposes it: the input of an output projection
#    (OUTPUT_PROJECTIONS) that is a direct child of one of the layer's children (its MLP, whatever it is called:
#    `mlp`, `feed_forward`, `ffn`, `mixer`, `mlp_block`, ...; attention modules excluded) or of the layer itself (OPT);
# 3. a mixture-of-experts block (a child holding `experts`): its shared expert's hidden activation, else the block's
#    output (experts fused into 3-D parameters expose no hidden activation at a module boundary).
# A layer with none of these (the Mamba or attention layers of a hybrid stack) has no default site.
KEPT_DEFAULTS = ("mlp.up_proj", "mlp.act")
OUTPUT_PROJECTIONS = ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2", "fc_out")
SHARED_EXPERTS = ("shared_expert", "shared_experts")
# Children tried first, in this order, before the layer's other children (a layer's MLP usually has one of these names)
MLP_NAMES = ("mlp", "feed_forward", "ffn", "mixer", "mlp_block", "block_sparse_moe")
DEFAULT_SITES = (  # the rule written out for the usual names (error messages, docs)
    *KEPT_DEFAULTS,
    *(f"{name}.{projection}:input" for name in MLP_NAMES for projection in OUTPUT_PROJECTIONS),
    *(f"{projection}:input" for projection in OUTPUT_PROJECTIONS),
    *(f"{name}.{shared}.down_proj:input" for name in MLP_NAMES for shared in SHARED_EXPERTS),
    *MLP_NAMES,  # where that module holds `experts`: the MoE block's output
)


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
    try:
        prefix, layers = decoder_layers(model)
    except ValueError:
        return "(the model has no nn.ModuleList of layers)"
    names = [
        name for name, _ in layers[0].named_modules() if name and "lora_" not in name and "base_layer" not in name
    ]
    shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
    return f"modules inside `{prefix}.0`: {shown}"


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(name, list)`` of the decoder layers of the model's language model (``model.layers``, ``transformer.h``,
    ``model.language_model.layers``, ...): the shallowest non-empty ``nn.ModuleList`` inside ``get_decoder()`` (the
    whole model when it has none), its name without wrapper segments."""
    bare = unwrap_model(model)
    try:
        scope = bare.get_decoder()
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        scope = None
    scope = scope if isinstance(scope, nn.Module) else bare
    lists = [(n, m) for n, m in scope.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"{type(bare).__name__} has no list of decoder layers (an `nn.ModuleList`)")
    _, layers = min(lists, key=lambda item: (canonical_name(item[0]).count("."), -len(item[1])))
    name = next(n for n, m in bare.named_modules() if m is layers)
    return canonical_name(name), layers


def _submodule(layer: nn.Module, path: str) -> nn.Module | None:
    """The module at ``path`` inside ``layer`` (wrapper segments skipped), or ``None``."""
    for name, module in layer.named_modules():
        if canonical_name(name) == path and name.rsplit(".", 1)[-1] not in WRAPPER_SEGMENTS:
            return module
    return None


def _children(module: nn.Module) -> dict[str, nn.Module]:
    """The direct children of ``module`` by name, looking through wrapper modules (FSDP, checkpointing)."""
    found = {}
    for name, child in module.named_modules():
        path = canonical_name(name)
        if path and "." not in path and name.rsplit(".", 1)[-1] not in WRAPPER_SEGMENTS:
            found.setdefault(path, child)
    return found


def _layer_children(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layer's direct children that may hold its MLP: the usual MLP names first, then the others, attention
    modules left out."""
    children = [
        (n, c) for n, c in _children(layer).items() if "attn" not in n.lower() and "attention" not in n.lower()
    ]
    usual = sorted((c for c in children if c[0] in MLP_NAMES), key=lambda c: MLP_NAMES.index(c[0]))
    return usual + [c for c in children if c[0] not in MLP_NAMES]


def is_moe_block(module: nn.Module | None) -> bool:
    """A mixture-of-experts block: a module that holds ``experts``."""
    return module is not None and isinstance(getattr(module, "experts", None), nn.Module)


def default_layer_site(layer: nn.Module) -> Site | None:
    """The default site of one decoder layer (the rule above :data:`DEFAULT_SITES`), or ``None`` for a layer without an
    MLP (the Mamba or attention layers of a hybrid stack)."""
    for spec in KEPT_DEFAULTS:
        if _submodule(layer, Site.parse(spec).path) is not None:
            return Site.parse(spec)
    children = _layer_children(layer)
    for name, child in children:
        if is_moe_block(child):
            continue  # an MoE block's own `down_proj`-like names are its experts' fused parameters
        for projection in OUTPUT_PROJECTIONS:
            if projection in _children(child):
                return Site(f"{name}.{projection}", capture_input=True)
    for projection in OUTPUT_PROJECTIONS:
        if projection in _children(layer):
            return Site(projection, capture_input=True)
    for name, child in children:
        if not is_moe_block(child):
            continue
        for shared in SHARED_EXPERTS:
            expert = _children(child).get(shared)
            for projection in OUTPUT_PROJECTIONS:
                if expert is not None and projection in _children(expert):
                    return Site(f"{name}.{shared}.{projection}", capture_input=True)
        return Site(name)
    return None


def default_sites(model: nn.Module) -> dict[int, Site]:
    """The default site of each decoder layer that has one (layer index -> site)."""
    _, layers = decoder_layers(model)
    found = {index: default_layer_site(layer) for index, layer in enumerate(layers)}
    return {index: site for index, site in found.items() if site is not None}


def num_decoder_layers(model: nn.Module) -> int:
    return len(decoder_layers(model)[1])


def nearest_layer(eligible, num_layers: int) -> int:
    """The eligible layer nearest to ``num_layers // 3`` (the lower one on a tie)."""
    target = num_layers // 3
    return min(sorted(eligible), key=lambda index: abs(index - target))


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
        model: any causal LM (or vision-language model: its language model's layers), bare or wrapped by PEFT
            (``base_model.model...``), DDP, DeepSpeed or FSDP.
        layers: decoder layer indices, negative ones counting from the end; ``None`` means one layer: of the layers
            that hold the site, the one nearest to ``num_layers // 3`` (layer 10 of 32 for Llama-2-7B, as in the
            paper's runs).
        site: a module path inside a decoder layer (``"mlp.up_proj"``, ``"mlp.down_proj:input"``), or ``None`` for
            the default rule applied to each layer (:data:`DEFAULT_SITES`).
        fields: the option names ``(layers, site)`` that error messages name.

    Raises:
        ValueError: listing what exists when the site matches nothing, the valid range when a layer is out of it, or
            the eligible layers when a requested layer lacks the site.
    """
    layers_field, site_field = fields
    bare = unwrap_model(model)
    if site is None:
        prefix, layer_list = decoder_layers(bare)
        n_layers = len(layer_list)
        sites = default_sites(bare)
        if not sites:
            for spec in DEFAULT_SITES:
                if _hidden_by_modules_to_save(bare, Site.parse(spec)):
                    raise ValueError(_site_error(bare, Site.parse(spec), {}, site_field))
            raise ValueError(
                f"Could not choose a default `{site_field}` for this architecture: no decoder layer of "
                f"{type(bare).__name__} has an MLP the default rule recognises (`mlp.up_proj`, `mlp.act`, the input of "
                f"an MLP output projection such as `mlp.down_proj` / `fc2` / `w2`, a shared expert, an MoE block; "
                f"docs/method.md, section 2). Set `{site_field}` to a module path inside a decoder layer (append "
                f"':input' to hook a module's input). {_describe_layer0(bare)}"
            )
        real_names = {id(module): name for name, module in bare.named_modules()}  # wrapper segments included
        found = {}
        for index, layer_site in sites.items():
            module = _submodule(layer_list[index], layer_site.path)
            found[index] = (real_names[id(module)], layer_site, module)
        what = "MLP site (the default rule)"
    else:
        if not isinstance(site, Site):
            site = Site.parse(site, site_field)
        groups = site_groups(bare, site)
        if len(groups) > 1:  # several stacks (a vision tower): the language model's decoder layers
            decoder_prefix = decoder_layers(bare)[0]
            groups = {p: g for p, g in groups.items() if p == decoder_prefix} or groups
        if len(groups) != 1:
            raise ValueError(_site_error(bare, site, groups, site_field))
        ((prefix, group),) = groups.items()
        container = _layer_lists(bare).get(prefix) if prefix else None
        n_layers = len(container) if isinstance(container, nn.ModuleList) else max(group) + 1
        found = {index: (name, site, module) for index, (name, module) in group.items()}
        what = f"module {site.path!r}"
    if layers is None:
        layers = [nearest_layer(found, n_layers)]
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
            raise ValueError(
                f"`{layers_field}`: decoder layer {index} has no {what}; the layers that have one are {sorted(found)}"
            )
        if index in {r.layer for r in resolved}:
            raise ValueError(f"`{layers_field}` names layer {index} twice ({layers})")
        name, layer_site, module = found[index]
        resolved.append(ResolvedSite(layer=index, prefix=prefix, name=name, module=module, site=layer_site))
    return resolved


def resolve_measurement_sites(
    model: nn.Module, layers: list[int] | None = None, site: str | Site | None = None
) -> list[ResolvedSite]:
    """The sites a measurement reads: :func:`resolve_sites` with every decoder layer that holds the site by default,
    its errors naming the measurement's options (``layers``, ``site``)."""
    bare = unwrap_model(model)
    if layers is None:
        if site is None:
            layers = sorted(default_sites(bare))
        else:
            parsed = site if isinstance(site, Site) else Site.parse(site, "site")
            groups = site_groups(bare, parsed)
            decoder_prefix = decoder_layers(bare)[0]
            group = groups.get(decoder_prefix) or (next(iter(groups.values())) if len(groups) == 1 else {})
            layers = sorted(group) or None
    return resolve_sites(bare, layers, site, fields=("layers", "site"))


def describe_sites(sites: list[ResolvedSite]) -> str:
    """The site of a list of resolved sites: ``"mlp.up_proj:output"``, or ``"layer 0: ..., layer 2: ..."`` when the
    default rule chose different sites for different layers."""
    names = {str(s.site) for s in sites}
    if len(names) == 1:
        return names.pop()
    return ", ".join(f"layer {s.layer}: {s.site}" for s in sites)
