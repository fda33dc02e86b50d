# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""How the measuring commands load models: TRL's ``ModelConfig`` options that apply to loading (dtype, revision,
attention, 4-bit / 8-bit), and the device, remote code and an adapter's base, which it lacks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass

from trl import ModelConfig

from ..monosemanticity.loading import check_device
from ..utils import check_choice
from .base import option


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
    device: str = option("auto", "Device to run on: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1'.")
    trust_remote_code: bool = option(False, "Allow custom model code from the Hub.")
    base_model: str | None = option(None, "Base model of PEFT adapters (default: their `base_model_name_or_path`).")

    def __post_init__(self):
        check_choice("dtype", self.dtype, ModelConfig.__dataclass_fields__["dtype"].metadata["choices"])
        check_device(self.device)
        self.model_config()  # TRL's own checks (4-bit and 8-bit at once)

    def model_config(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_OPTIONS})

    def loading(self) -> dict:
        """Keyword arguments of ``load_model_and_adapter``."""
        return {"model_args": self.model_config(), "device": self.device, "trust_remote_code": self.trust_remote_code}
