"""Bad configs raise a ValueError naming the field and the allowed values; CLI parsing."""

import pytest
from transformers import HfArgumentParser

from tests.helpers import base_kwargs, make_dataset, make_model, make_tokenizer
from trl_decpo import PAPER_RECIPE, DecPOConfig, DecPOTrainer


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("decorrelation_coef", -0.1, r"decorrelation_coef.*>= 0"),
        ("decorrelation_coef", float("nan"), r"decorrelation_coef"),
        ("decorrelation_pooling", "max", r"decorrelation_pooling.*\['last', 'mean', 'tokens'\]"),
        ("decorrelation_sequences", "all", r"decorrelation_sequences.*\['chosen', 'rejected', 'both'\]"),
        ("decorrelation_reduction", "avg", r"decorrelation_reduction.*\['sum', 'mean'\]"),
        ("decorrelation_target", "tokens", r"decorrelation_target.*\['samples', 'features'\]"),
        ("decorrelation_layers", [], r"decorrelation_layers.*non-empty"),
        ("decorrelation_layers", [1, 1], r"decorrelation_layers.*twice"),
        ("decorrelation_site", "mlp.up_proj:middle", r"decorrelation_site.*'input' or 'output'"),
        ("decorrelation_max_rows", 1, r"decorrelation_max_rows"),
    ],
)
def test_bad_field_values(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        DecPOConfig(**base_kwargs(tmp_path), **{field: value})


def test_tokens_pooling_with_samples_target_needs_a_cap(tmp_path):
    with pytest.raises(ValueError, match="decorrelation_max_rows"):
        DecPOConfig(**base_kwargs(tmp_path), decorrelation_pooling="tokens")
    config = DecPOConfig(**base_kwargs(tmp_path), decorrelation_pooling="tokens", decorrelation_max_rows=64)
    assert config.decorrelation_max_rows == 64


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"decorrelation_layers": [7]}, r"out of range.*-4\.\.3"),
        ({"decorrelation_site": "mlp.missing"}, r"matches no module.*mlp\.up_proj"),
    ],
)
def test_model_dependent_errors_before_training(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DecPOTrainer(
            model=make_model(),
            args=DecPOConfig(**base_kwargs(tmp_path), **overrides),
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
        )


def test_command_line_parsing(tmp_path):
    parser = HfArgumentParser(DecPOConfig)
    (config,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "--bf16",
            "false",
            "--decorrelation_coef",
            "0.3",
            "--decorrelation_layers",
            "2",
            "-1",
            "--decorrelation_site",
            "mlp.down_proj:input",
            "--decorrelation_pooling",
            "mean",
            "--decorrelation_normalize",
            "false",
        ]
    )
    assert config.decorrelation_coef == 0.3 and config.decorrelation_layers == [2, -1]
    assert config.decorrelation_site == "mlp.down_proj:input" and config.decorrelation_pooling == "mean"
    assert config.decorrelation_normalize is False
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--decorrelation_pooling", "max"])


def test_paper_recipe_preset(tmp_path):
    config = DecPOConfig(**base_kwargs(tmp_path), **PAPER_RECIPE)
    assert (config.decorrelation_coef, config.decorrelation_normalize, config.decorrelation_reduction) == (
        1e-4,
        False,
        "sum",
    )
