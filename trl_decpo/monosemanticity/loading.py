# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Models to measure or evaluate, from a folder, a Hub id or a PEFT adapter folder: how they load is TRL's
``ModelConfig`` (dtype, revision, attention implementation, 4-bit / 8-bit through ``trl.get_quantization_config``); an
adapter goes on the base model it records (``peft.PeftConfig``), or on one given.

    from trl_decpo.monosemanticity.loading import load_model_and_adapter, load_tokenizer

    model = load_model_and_adapter("out/decpo-adapter")  # the adapter on the base it records, eval mode
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from transformers.utils import logging


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
DEVICES = ("auto", "cpu", "cuda", "mps", "xpu", "npu")


logger = logging.get_logger(__name__)


def is_adapter_folder(path) -> bool:
    """Whether ``path`` is a local PEFT adapter folder (it holds ``adapter_config.json``, PEFT's config file: read
    without importing peft, an optional extra)."""
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(os.path.join(path, "adapter_config.json"))


def adapter_base(path: str) -> str | None:
    """The base model an adapter folder records (``base_model_name_or_path``)."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(path).base_model_name_or_path


def check_device(device: str | None) -> None:
    if device is not None and device.split(":")[0] not in DEVICES:
        raise ValueError(
            f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps', 'xpu' or 'npu', got {device!r}"
        )


def resolve_device(device: str | None = None) -> str:
    """``device``, or for ``None`` / ``"auto"`` CUDA when available, else the CPU."""
    check_device(device)
    if device not in (None, "auto"):
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def source_name(model) -> str | None:
    """Where a model came from: its path or Hub id (a loaded model: ``config._name_or_path``), else ``None``."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    bare = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(bare, "config", None), "_name_or_path", None) or None


def display_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


def name_models(base, models, base_name: str | None = None) -> tuple[str, dict]:
    """``(base name, {name: model or path})``: a mapping keeps its names; a sequence is named after the folders (made
    unique with ``#i``), or ``model_<i>`` for loaded models; the base after its folder, else ``"base"``."""
    if isinstance(models, Mapping):
        named = dict(models)
        base_name = base_name or (display_name(os.fspath(base)) if isinstance(base, (str, os.PathLike)) else "base")
    else:
        entries = [base, *models] if isinstance(models, Sequence) and not isinstance(models, str) else None
        if entries is None:
            raise ValueError(f"`models` must be a mapping of names to models or a list of them, got {models!r}")
        names = [
            display_name(os.fspath(m)) if isinstance(m, (str, os.PathLike)) else ("base" if i == 0 else f"model_{i}")
            for i, m in enumerate(entries)
        ]
        names = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        base_name = base_name or names[0]
        named = dict(zip(names[1:], models, strict=True))
    if not named:
        raise ValueError("give at least one model to compare with the base")
    if base_name in named:
        raise ValueError(f"the base and a model are both named {base_name!r}: names must be distinct")
    return base_name, named


def model_kwargs(model_args=None, device: str | None = None, trust_remote_code: bool = False) -> dict:
    """``from_pretrained`` keyword arguments from a ``trl.ModelConfig`` (default: ``ModelConfig()``, float32)."""
    from trl import ModelConfig, get_quantization_config

    args = model_args if model_args is not None else ModelConfig()
    kwargs = {"revision": args.model_revision, "trust_remote_code": trust_remote_code}
    kwargs["dtype"] = args.dtype if args.dtype in (None, "auto") else getattr(torch, args.dtype)
    if args.attn_implementation is not None:
        kwargs["attn_implementation"] = args.attn_implementation
    if args.load_in_4bit and args.dtype in (None, "auto"):  # compute dtype: the weights', float32 for "auto"
        args = dataclasses.replace(args, dtype="float32")
    quantization = get_quantization_config(args)
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": resolve_device(device)})
    return kwargs


def apply_adapter(model: nn.Module, adapter: str):
    """The PEFT adapter folder ``adapter`` on ``model`` (``PeftModel.from_pretrained``, which wraps ``model`` in
    place), in eval mode, without transformers' warning about PEFT's own call of the deprecated
    ``is_gradient_checkpointing`` (compat assumption 16)."""
    from peft import PeftModel

    from ..compat import quiet_deprecated_checkpointing_calls

    with quiet_deprecated_checkpointing_calls():
        return PeftModel.from_pretrained(model, adapter).eval()


def remove_adapter(model: nn.Module) -> nn.Module:
    """The base model again after :func:`apply_adapter` (its LoRA layers taken off, the weights unchanged)."""
    return model.unload() if hasattr(model.base_model, "unload") else model.get_base_model()


def load_model_and_adapter(
    path: str,
    base: str | nn.Module | None = None,
    model_args=None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """A causal LM in eval mode on ``device`` (default: CUDA when available, else the CPU).

    ``path`` is a model folder or Hub id, or a PEFT adapter folder, which is loaded on ``base`` (a path, or a loaded
    model that the adapter then wraps in place) or else on the base model the adapter records. ``model_args``: a
    ``trl.ModelConfig`` (dtype, revision, attention implementation, quantisation); default ``ModelConfig()``.
    """
    from transformers import AutoModelForCausalLM

    from ..sources import check_model_source

    revision = getattr(model_args, "model_revision", None)
    check_model_source(path, "model", revision)  # one line, before transformers' error or network retries
    if os.path.isfile(path):
        raise ValueError(f"model {path!r} is a file; give a model folder or a Hub id")
    adapter = path if is_adapter_folder(path) else None
    if adapter is not None:
        base = base if base is not None else adapter_base(adapter)
        if not base:
            raise ValueError(f"adapter folder {adapter!r} records no base model; give its base model")
        if isinstance(base, str):
            check_model_source(base, f"the base model of adapter {adapter!r}", revision)
    target = base if adapter is not None else path
    kwargs = model_kwargs(model_args, device, trust_remote_code)
    if isinstance(target, nn.Module):
        model = target
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
        except OSError as err:
            raise ValueError(f"cannot load model {target!r}: {err}") from err
    if adapter is not None:
        model = apply_adapter(model, adapter)
    if "quantization_config" not in kwargs:
        model = model.to(resolve_device(device))
    return model.eval()


def load_tokenizer(path: str, base: str | None = None, trust_remote_code: bool = False):
    """The tokenizer saved with the model (or adapter) folder, else ``base``'s (for an adapter: by default the base
    it records).

    A local folder without tokenizer files is skipped: ``AutoTokenizer`` would otherwise build an empty tokenizer from
    the model config alone (transformers 5), which encodes every prompt to nothing.
    """
    from transformers import AutoTokenizer

    candidates = [path, base or (adapter_base(path) if is_adapter_folder(path) else None)]
    errors = []
    for candidate in [c for c in candidates if c]:
        if os.path.isdir(candidate) and not any(os.path.isfile(os.path.join(candidate, f)) for f in TOKENIZER_FILES):
            errors.append(f"{candidate}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
            continue
        try:
            return AutoTokenizer.from_pretrained(candidate, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            errors.append(f"{candidate}: {err}")
    raise ValueError("cannot load a tokenizer: " + "; ".join(errors))


def tokenizer_for(tokenizer, base, trust_remote_code: bool = False):
    """The tokenizer the comparisons use: ``tokenizer`` itself, loaded when it is a folder or Hub id, else ``base``'s
    when ``base`` is a path; a ``ValueError`` when there is none (a loaded ``base`` brings no tokenizer)."""
    if isinstance(tokenizer, (str, os.PathLike)) or (tokenizer is None and not isinstance(base, nn.Module)):
        tokenizer = load_tokenizer(tokenizer or base, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        raise ValueError("`tokenizer` is required when `base` is a loaded model (a folder or Hub id brings its own)")
    return tokenizer


def note_other_base(adapter: str, base) -> None:
    """Warn when an adapter folder records another base model than the one (``base``) it is applied to."""
    recorded, applied_to = adapter_base(adapter), source_name(base)
    if recorded and applied_to and os.path.realpath(recorded) != os.path.realpath(applied_to):
        logger.warning(f"note: adapter {adapter} records base {recorded!r}; it is applied to BASE {applied_to!r}")
