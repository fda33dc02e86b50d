# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Loading models for measurement: local folders or Hub ids, PEFT adapter folders, dtype, device and 4-bit options."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..utils import check_choice
from .notices import release_bitsandbytes_notice
from .sources import check_model_source


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
QUANT_TYPE_CHOICES = ("nf4", "fp4")


@dataclass
class LoadArguments:
    """How ``trl-decpo`` loads models (``from_pretrained``: local folders offline, Hub ids when online)."""

    dtype: str = field(
        default="auto",
        metadata={"help": "Weight dtype; 'auto' keeps the checkpoint's.", "choices": list(DTYPE_CHOICES)},
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "Where the model runs: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', 'mps'."
        },
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the weights in 4-bit with bitsandbytes."})
    bnb_4bit_quant_type: str = field(
        default="nf4", metadata={"help": "4-bit quantisation type.", "choices": list(QUANT_TYPE_CHOICES)}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    base_model: str | None = field(
        default=None,
        metadata={"help": "Base model for PEFT adapter folders (default: the adapter's `base_model_name_or_path`)."},
    )

    def __post_init__(self):
        check_choice("dtype", self.dtype, DTYPE_CHOICES)
        check_choice("bnb_4bit_quant_type", self.bnb_4bit_quant_type, QUANT_TYPE_CHOICES)
        device = self.device.split(":")[0]
        if device not in ("auto", "cpu", "cuda", "mps", "xpu", "npu"):
            raise ValueError(
                f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps', 'xpu' or 'npu', got {self.device!r}"
            )

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"


def is_adapter_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "adapter_config.json"))


def adapter_base(path: str) -> str | None:
    with open(os.path.join(path, "adapter_config.json"), encoding="utf-8") as f:
        return json.load(f).get("base_model_name_or_path")


def check_models(paths: list[str], args: LoadArguments, adapters_on_first: bool = False) -> None:
    """Each model (and the base model of each PEFT adapter folder, unless adapters are applied to the first model)
    is an existing local folder or a Hub id that can be had: a one-line ``ValueError`` otherwise, before anything
    loads or any output folder is made."""
    for path in paths:
        check_model_source(path, "model")
        if is_adapter_folder(path) and not adapters_on_first:
            base = args.base_model or adapter_base(path)
            if base:
                check_model_source(base, f"the base model of adapter {path!r}")


def load_model(path: str, args: LoadArguments, base_model: str | None = None):
    """A causal LM in eval mode; a PEFT adapter folder is loaded on ``base_model`` (or ``args.base_model``, or the
    adapter's recorded base)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not os.path.isdir(path) and os.path.exists(path):
        raise ValueError(f"model {path!r} is a file; give a model folder or a Hub id")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    device = args.resolved_device()
    kwargs = {"dtype": dtype, "trust_remote_code": args.trust_remote_code}
    if args.load_in_4bit:
        release_bitsandbytes_notice()
        compute = torch.float32 if dtype == "auto" else dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=args.bnb_4bit_quant_type, bnb_4bit_compute_dtype=compute
        )
        kwargs["device_map"] = {"": device}
    adapter = None
    if is_adapter_folder(path):
        adapter = path
        path = base_model or args.base_model or adapter_base(path)
        if not path:
            raise ValueError(f"adapter folder {adapter!r} records no base model; pass `--base_model`")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ValueError(f"cannot load model {path!r}: {err}") from err
    if adapter is not None:
        model = apply_adapter(model, adapter)
    if not args.load_in_4bit:
        model = model.to(device)
    model.eval()
    return model


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_tokenizer(path: str, args: LoadArguments, base_model: str | None = None):
    """The tokenizer saved with the model (or adapter) folder, else the base model's.

    A local folder without tokenizer files is skipped: ``AutoTokenizer`` would otherwise build an empty tokenizer from
    the model config alone (transformers 5), which encodes every prompt to nothing.
    """
    from transformers import AutoTokenizer

    candidates = [path]
    if is_adapter_folder(path):
        candidates.append(base_model or args.base_model or adapter_base(path))
    errors = []
    for candidate in [c for c in candidates if c]:
        if os.path.isdir(candidate) and not any(os.path.isfile(os.path.join(candidate, f)) for f in TOKENIZER_FILES):
            errors.append(f"{candidate}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
            continue
        try:
            return AutoTokenizer.from_pretrained(candidate, trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError) as err:
            errors.append(f"{candidate}: {err}")
    raise ValueError("cannot load a tokenizer: " + "; ".join(errors))


def apply_adapter(model, adapter: str):
    """The PEFT adapter folder ``adapter`` on ``model`` (``PeftModel.from_pretrained``), without transformers' warning
    about PEFT's own call of the deprecated ``is_gradient_checkpointing`` (compat assumption 16)."""
    from peft import PeftModel

    from ..trainer.compat import quiet_deprecated_checkpointing_calls

    with quiet_deprecated_checkpointing_calls():
        return PeftModel.from_pretrained(model, adapter)
