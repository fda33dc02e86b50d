# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Training precision by what the hardware runs fast: bf16 where it is native, float32 otherwise.

On a CPU, bf16 autocast is only fast where oneDNN has bf16 kernels for it (x86 with AVX-512 or AMX, Arm with the BF16
extension). Elsewhere, e.g. on an AVX2-only x86 CPU, every bf16 matmul falls back to a slow path: on 2 AVX2 cores a
bf16 matmul at SmolLM2's MLP shape took 731 ms against 7 ms in float32 (``python -m benchmarks.precision``). So the
research scripts, the benchmarks and the examples ask :func:`choose_precision` (``--precision auto``, the default),
which picks bf16 only where it runs natively and says why in one line; ``--precision bf16`` or ``fp32`` forces either.

No torch at import: ``import trl_decpo.precision`` is free, the checks import torch when called.
"""

from __future__ import annotations

from dataclasses import dataclass

from .utils import check_choice


PRECISION_CHOICES = ("auto", "bf16", "fp32")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively: oneDNN's own check, ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``
    (x86 with AVX-512 or AMX, Arm with the BF16 extension). A torch without that check counts as ``False``: float32 is
    never the slow choice. (A private torch op; ``tests/test_precision_choice.py`` pins that it exists and returns a bool.)"""
    import torch

    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None:
        return False
    try:
        return bool(check())
    except RuntimeError:  # a torch built without oneDNN
        return False


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in, and why (one line for the console and the report)."""

    bf16: bool
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def describe(self) -> str:
        what = "bf16 autocast" if self.bf16 else "float32"
        return f"precision: {what} ({self.reason})"


def choose_precision(requested: str = "auto", use_cpu: bool = True, field: str = "precision") -> Precision:
    """The training precision for ``requested`` (``"auto"``, ``"bf16"`` or ``"fp32"``; ``field`` names the option in
    the error for any other value).

    ``"auto"``: bf16 on a CPU that runs it natively (:func:`cpu_has_native_bf16`), float32 on one that does not; on a
    GPU (``use_cpu=False`` and CUDA available), bf16 where the GPU supports it. ``"bf16"`` and ``"fp32"`` are kept as
    asked, with a reason that says when bf16 will be slow."""
    check_choice(field, requested, PRECISION_CHOICES)
    import torch

    gpu = not use_cpu and torch.cuda.is_available()
    if requested == "fp32":
        return Precision(False, f"--{field} fp32")
    if gpu:
        supported = torch.cuda.is_bf16_supported()
        if requested == "bf16" or supported:
            return Precision(True, f"--{field} {requested}, on a GPU" + ("" if supported else " without bf16"))
        return Precision(False, f"--{field} auto: this GPU has no bf16")
    native = cpu_has_native_bf16()
    if requested == "bf16":
        note = (
            "this CPU runs bf16 natively"
            if native
            else "this CPU has no native bf16: training will be many times slower"
        )
        return Precision(True, f"--{field} bf16; {note}")
    if native:
        return Precision(True, f"--{field} auto: this CPU runs bf16 natively; --{field} fp32 to train in float32")
    return Precision(
        False,
        f"--{field} auto: this CPU has no native bf16 (oneDNN reports none), so bf16 would be many times slower; "
        f"--{field} bf16 forces it",
    )


MIXED_PRECISION = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval")


def fit_mixed_precision(ns) -> tuple[list[str], str | None]:
    """The mixed precision a TRL run gets on this machine, fixed in ``ns`` (parsed training arguments, with ``bf16=None``
    for TRL's default): without a GPU (and without ``use_cpu``) bf16/fp16 are turned off, asked for or TRL's default
    bf16, since transformers refuses them there; with ``use_cpu`` they are kept, except TRL's default bf16 on a CPU
    without native bf16 (:func:`cpu_has_native_bf16`). Returns the fields turned off and the line that says why (or
    ``None``)."""
    if getattr(ns, "use_cpu", False):
        if getattr(ns, "bf16", False) is False or getattr(ns, "fp16", False):
            return [], None
        if cpu_has_native_bf16():
            return [], None
        if ns.bf16 is not None:
            return [], "--bf16 true on a CPU without native bf16: training will be many times slower"
        ns.bf16 = False
        return ["bf16"], (
            "this CPU has no native bf16 (many times slower than float32 there): TRL's default bf16 turned off, "
            "training in float32 (--bf16 true keeps bf16)"
        )
    on = [name for name in MIXED_PRECISION if getattr(ns, name, None)]
    if getattr(ns, "bf16", False) is None and not getattr(ns, "fp16", False):
        on.insert(0, "bf16")  # TRL's default: bf16 unless fp16
    if not on or gpu_available():
        return [], None
    for name in MIXED_PRECISION:
        setattr(ns, name, False)
    note = f"no GPU found: {', '.join(on)} turned off, training in float32 on the CPU (--use_cpu true keeps your "
    return list(dict.fromkeys(["bf16", "fp16", *on])), note + "precision settings on the CPU)"


def gpu_available() -> bool:
    """Whether torch sees an accelerator that mixed precision runs on (CUDA, MPS, XPU, NPU, HPU or XLA)."""
    from transformers import utils

    gpus = ("cuda", "mps", "xpu", "npu", "hpu", "xla")
    return any(getattr(utils, f"is_torch_{name}_available", lambda: False)() for name in gpus)
