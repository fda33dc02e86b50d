# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The decorrelated configs: TRL's fields plus the shared ones, validated at construction. The TRL behaviour the
decorrelated trainers rely on is pinned in tests/test_compat.py (assumptions 13 to 15)."""

from __future__ import annotations

import dataclasses

import pytest
from trl import DPOConfig

from tests.trainers.decorrelated_helpers import CLASSES, KINDS, config
from trl_decpo import DecPOConfig
from trl_decpo.mixin.arguments import DecorrelationArguments


SHARED = [f.name for f in dataclasses.fields(DecorrelationArguments)]


@pytest.mark.parametrize("kind", KINDS)
def test_config_is_the_trl_config_plus_the_shared_fields(tmp_path, kind):
    _, plain_config, _, decorrelated_config = CLASSES[kind]
    names = [f.name for f in dataclasses.fields(decorrelated_config)]
    assert names == [f.name for f in dataclasses.fields(plain_config)] + SHARED
    assert issubclass(decorrelated_config, plain_config)
    assert all(f.metadata.get("help") for f in dataclasses.fields(decorrelated_config) if f.name in SHARED)
    positional = decorrelated_config(str(tmp_path / "out"), bf16=False, use_cpu=True)
    assert positional.output_dir == str(tmp_path / "out") and positional.decorrelation_coef == 1.0


def test_decpo_config_keeps_its_fields_order_and_dpo_wording():
    names = [f.name for f in dataclasses.fields(DecPOConfig)]
    assert names == [f.name for f in dataclasses.fields(DPOConfig)] + SHARED
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(DecPOConfig)}
    assert "added to the DPO loss" in helps["decorrelation_coef"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decorrelation_coef": -1.0}, "`decorrelation_coef` must be a finite number >= 0"),
        ({"decorrelation_pooling": "max"}, "decorrelation_pooling"),
        ({"decorrelation_pooling": "tokens"}, "set `decorrelation_max_rows`"),
        ({"decorrelation_site": "mlp.up_proj:bad"}, "decorrelation_site|mlp.up_proj:bad"),
    ],
)
def test_shared_fields_are_validated_at_construction(tmp_path, kind, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(kind, tmp_path, **overrides)


@pytest.mark.parametrize("kind", ["sft", "kto", "grpo", "rloo"])
def test_chosen_or_rejected_sequences_are_refused_without_pairs(tmp_path, kind):
    with pytest.raises(ValueError, match=r"`decorrelation_sequences='chosen'` has no meaning.*allowed: \['both'\]"):
        config(kind, tmp_path, decorrelation_sequences="chosen")


@pytest.mark.parametrize("kind", ["sft", "kto", "grpo", "rloo"])
def test_the_command_line_offers_only_both_sequences_without_pairs(kind, capsys):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(CLASSES[kind][3])
    assert "{both}" in parser.format_help().replace("\n", " ").split("--decorrelation_sequences", 1)[1][:40]
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", "x", "--decorrelation_sequences", "chosen"])
    assert "invalid choice: 'chosen'" in capsys.readouterr().err


def test_reward_config_accepts_each_half(tmp_path):
    assert config("reward", tmp_path, decorrelation_sequences="rejected").decorrelation_sequences == "rejected"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"packing": True, "packing_strategy": "wrapped"}, "packing_strategy='wrapped'"),
        ({"packing": True, "pad_to_multiple_of": 8}, "pad_to_multiple_of=8"),
    ],
)
def test_sft_packing_without_sequence_boundaries_is_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config("sft", tmp_path, **overrides)
    config("sft", tmp_path, coef=0.0, **overrides)  # without the penalty, TRL's own choice
