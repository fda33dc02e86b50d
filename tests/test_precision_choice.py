# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""`trl_decpo.precision`: bf16 only where the CPU runs it natively, float32 otherwise; a flag forces either."""

import pytest
import torch

from trl_decpo import precision
from trl_decpo.precision import choose_precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set the answer of the capability check (both answers are tested, whatever this machine's CPU is)."""

    def set_answer(native: bool):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)

    return set_answer


def test_auto_trains_in_bf16_only_on_a_cpu_with_native_bf16(cpu_bf16):
    cpu_bf16(True)
    chosen = choose_precision("auto")
    assert chosen.bf16 and chosen.name == "bf16"
    assert "runs bf16 natively" in chosen.reason and "--precision fp32" in chosen.reason
    cpu_bf16(False)
    chosen = choose_precision("auto")
    assert not chosen.bf16 and chosen.name == "fp32"
    assert "no native bf16" in chosen.reason and "--precision bf16" in chosen.reason  # why, and how to change it
    line = chosen.describe()
    assert line.startswith("precision: float32 (") and "\n" not in line


@pytest.mark.parametrize("native", [True, False])
def test_a_forced_precision_is_kept_whatever_the_cpu(cpu_bf16, native):
    cpu_bf16(native)
    assert choose_precision("bf16").bf16 and not choose_precision("fp32").bf16
    # forcing bf16 where it is slow is allowed, and said
    assert ("slower" in choose_precision("bf16").reason) is (not native)


def test_the_gpu_rule_follows_the_gpu_not_the_cpu(cpu_bf16, monkeypatch):
    cpu_bf16(False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision("auto", use_cpu=False).bf16
    assert not choose_precision("auto", use_cpu=True).bf16  # `use_cpu`: the CPU decides
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not choose_precision("auto", use_cpu=False).bf16


def test_a_bad_value_names_the_option_and_the_choices():
    with pytest.raises(ValueError, match=r"`precision` must be one of \['auto', 'bf16', 'fp32'\], got 'fp16'"):
        choose_precision("fp16")
    with pytest.raises(ValueError, match=r"`mixed` must be one of"):
        choose_precision("half", field="mixed")


def test_the_capability_check_is_onednns_and_answers_a_bool():
    # pins the private torch op the rule relies on; a torch without it counts as "no native bf16" (float32)
    assert isinstance(torch.ops.mkldnn._is_mkldnn_bf16_supported(), bool)
    assert precision.cpu_has_native_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_a_torch_without_the_check_means_float32(monkeypatch):
    class NoCheck:
        pass

    monkeypatch.setattr(torch.ops, "mkldnn", NoCheck(), raising=False)
    assert precision.cpu_has_native_bf16() is False
