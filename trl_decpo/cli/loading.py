# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""How the measuring commands load models: the options of TRL's ``ModelConfig`` that apply to loading (dtype,
revision, attention, 4-bit / 8-bit), and the device, remote code and an adapter's base, which it lacks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass

from trl import ModelConfig

from ..monosemanticity.loading import adapter_base, check_device, is_adapter_folder
from ..utils import check_choice
from .base import option
from .notices import release_bitsandbytes_notice
from .sources import check_model_source


MODEL_OPTIONS = ("dtype", "model_revision", "attn_implementation", "load_in_4bit", "load_in_8bit")
MODEL_OPTIONS += ("bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage")
HELP = {  # where ModelConfig's own help is about training
    "dtype": "Weight dtype; 'auto' keeps the checkpoint's (4-bit compute: float32).",
    "load_in_4bit": "Load the weights in 4-bit with bitsandbytes.",
    "load_in_8bit": "Load the weights in 8-bit with bitsandbytes.",
}


def _option(f):  # a ModelConfig field; `dtype` keeps the checkpoint's by default, as `from_pretrained` does
    default = "auto" if f.name == "dtype" else f.default
    return field(default=default, metadata={**f.metadata, "help": HELP.get(f.name, f.metadata.get("help"))})


_ModelOptions = make_dataclass(
    "_ModelOptions", [(f.name, f.type, _option(f)) for f in fields(ModelConfig) if f.name in MODEL_OPTIONS]
)


@dataclass
class LoadArguments(_ModelOptions):
    """How ``trl-decpo`` loads models (``from_pretrained``: local folders offline, Hub ids when online)."""

    device: str = option(
        "auto", "Where the model runs: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1'."
    )
    trust_remote_code: bool = option(False, "Allow custom model code from the Hub.")
    base_model: str | None = option(
        None, "Base model for PEFT adapter folders (default: the adapter's `base_model_name_or_path`)."
    )

    def __post_init__(self):
        check_choice("dtype", self.dtype, ModelConfig.__dataclass_fields__["dtype"].metadata["choices"])
        check_device(self.device)
        self.model_config()  # TRL's own checks (4-bit and 8-bit at once)

    def model_config(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_OPTIONS})

    def loading(self) -> dict:
        """Keyword arguments of ``load_model_and_adapter`` (bitsandbytes' held-back notice let out for 4/8-bit)."""
        if self.load_in_4bit or self.load_in_8bit:
            release_bitsandbytes_notice()
        return {"model_args": self.model_config(), "device": self.device, "trust_remote_code": self.trust_remote_code}


def check_models(paths: list[str], args: LoadArguments, adapters_on_first: bool = False) -> None:
    """Each model (and the base model of each PEFT adapter folder, unless adapters are applied to the first model)
    is an existing local folder or a Hub id that can be had: a one-line ``ValueError`` otherwise, before anything
    loads or any output folder is made."""
    for path in paths:
        check_model_source(path, "model", args.model_revision)
        if is_adapter_folder(path) and not adapters_on_first:
            base = args.base_model or adapter_base(path)
            if base:
                check_model_source(base, f"the base model of adapter {path!r}", args.model_revision)
