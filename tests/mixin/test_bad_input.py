"""Bad input: each case below raises a ValueError that names the problem (and, where there is a
list, the allowed values) before any training step. `test_the_count` pins how many there are: 27 config values
(every `DecPOConfig` field has at least one) and 11 model / data / probe setup cases. The command
line's own cases are in `tests/cli/test_train.py::test_clear_errors_before_training` and `tests/cli/test_cli_safety.py`."""

import dataclasses

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import DPOConfig

from tests.helpers import base_kwargs, decpo_config, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOConfig, DecPOTrainer, MonosemanticityCallback


CONFIG_CASES = [
    ("decorrelation_coef", -0.1, r"decorrelation_coef.*finite number >= 0"),
    ("decorrelation_coef", float("nan"), r"decorrelation_coef.*finite"),
    ("decorrelation_coef", float("inf"), r"decorrelation_coef.*finite"),
    ("decorrelation_coef", "1.0", r"decorrelation_coef.*number"),
    ("decorrelation_coef", True, r"decorrelation_coef.*number"),
    ("decorrelation_layers", [], r"decorrelation_layers.*non-empty"),
    ("decorrelation_layers", [1, 1], r"decorrelation_layers.*twice"),
    ("decorrelation_layers", ["a"], r"decorrelation_layers.*integers"),
    ("decorrelation_layers", [1.5], r"decorrelation_layers.*integers"),
    ("decorrelation_layers", "2", r"decorrelation_layers.*list"),
    ("decorrelation_site", "mlp.up_proj:middle", r"decorrelation_site.*'input' or 'output'"),
    ("decorrelation_site", "mlp..up_proj", r"decorrelation_site.*dotted module path"),
    ("decorrelation_site", ":input", r"decorrelation_site"),
    ("decorrelation_pooling", "max", r"decorrelation_pooling.*\['last', 'mean', 'tokens'\]"),
    ("decorrelation_pooling", None, r"decorrelation_pooling.*\['last', 'mean', 'tokens'\]"),
    ("decorrelation_sequences", "all", r"decorrelation_sequences.*\['chosen', 'rejected', 'both'\]"),
    ("decorrelation_normalize", "yes", r"decorrelation_normalize.*True or False"),
    ("decorrelation_normalize", 1, r"decorrelation_normalize.*True or False"),
    ("decorrelation_reduction", "avg", r"decorrelation_reduction.*\['sum', 'mean'\]"),
    ("decorrelation_target", "tokens", r"decorrelation_target.*\['samples', 'features'\]"),
    ("decorrelation_max_rows", 1, r"decorrelation_max_rows.*>= 2"),
    ("decorrelation_max_rows", 2.5, r"decorrelation_max_rows.*integer"),
    ("decorrelation_max_rows", True, r"decorrelation_max_rows.*integer"),
    ("decorrelation_across_ranks", "yes", r"decorrelation_across_ranks.*True or False"),
]
COMBINATION_CASES = [  # values valid alone, invalid together
    ({"decorrelation_pooling": "tokens"}, r"decorrelation_max_rows.*1024"),
    ({"decorrelation_pooling": "last", "decorrelation_max_rows": 64}, r"decorrelation_max_rows.*only applies"),
    ({"decorrelation_pooling": "mean", "decorrelation_max_rows": 64}, r"decorrelation_max_rows.*only applies"),
]


@pytest.mark.parametrize("field,value,match", CONFIG_CASES)
def test_invalid_config_value(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        DecPOConfig(**base_kwargs(tmp_path), **{field: value})


@pytest.mark.parametrize("overrides,match", COMBINATION_CASES)
def test_invalid_config_combination(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DecPOConfig(**base_kwargs(tmp_path), **overrides)


def test_every_decpo_field_has_a_bad_value_case():
    own = {f.name for f in dataclasses.fields(DecPOConfig)} - {f.name for f in dataclasses.fields(DPOConfig)}
    assert own == {field for field, _, _ in CONFIG_CASES}


def trainer(tmp_path, dataset=None, eval_dataset=None, **overrides):
    peft = overrides.pop("peft_config", None)
    return DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, **overrides),
        train_dataset=make_dataset() if dataset is None else dataset,
        eval_dataset=eval_dataset,
        processing_class=make_tokenizer(),
        peft_config=peft,
    )


QA = Dataset.from_dict({"question": ["the cat sat"], "answer": ["yes"]})
TOKENIZED = Dataset.from_dict(
    {"prompt_ids": [[3, 4]], "chosen_ids": [[5]], "rejected_ids": [[6]]}
)  # TRL 1.16: KeyError
SETUP_CASES = {
    "pre-tokenized columns only": (
        dict(dataset=TOKENIZED),
        r"`train_dataset` is not a preference dataset.*\['prompt_ids', 'chosen_ids'",
    ),
    "train dataset given as a dict of splits": (
        dict(dataset={"train": make_dataset()}),
        r"`train_dataset` must be one dataset.*\['train'\]",
    ),
    "train dataset without preference columns": (
        dict(dataset=QA),
        r"`train_dataset` is not a preference dataset.*'chosen'.*columns are \['question', 'answer'\]",
    ),
    "eval dataset without preference columns": (
        dict(eval_dataset={"qa": QA}),
        r"`eval_dataset\['qa'\]` is not a preference dataset",
    ),
    "site missing from the model": (
        dict(decorrelation_site="mlp.missing"),
        r"'mlp.missing' matches no module.*mlp\.up_proj",
    ),
    "layer out of range": (dict(decorrelation_layers=[9]), r"out of range.*-4\.\.3"),
    "PEFT trains only layers after the hooked one": (
        dict(
            decorrelation_layers=[1],
            peft_config=LoraConfig(r=2, target_modules=["up_proj"], layers_to_transform=[3], task_type="CAUSAL_LM"),
        ),
        r"No trainable parameter lies at or before decoder layer 1",
    ),
    "PEFT modules_to_save hides the site": (
        dict(peft_config=LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["mlp"], task_type="CAUSAL_LM")),
        r"hidden by PEFT's `modules_to_save`.*'mlp\.modules_to_save\.default\.up_proj'",
    ),
}


@pytest.mark.parametrize("case", list(SETUP_CASES))
def test_invalid_model_or_data(tmp_path, case):
    kwargs, match = SETUP_CASES[case]
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, **dict(kwargs))


def test_the_site_the_modules_to_save_error_suggests_trains(tmp_path):
    """The fix the message proposes works: the trained copy is hooked and the penalty's gradient reaches it (its
    gradient differs from the one of the same step without the penalty)."""
    site = "mlp.modules_to_save.default.up_proj"

    def grads(coef):
        peft = LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["mlp"], task_type="CAUSAL_LM")
        t = trainer(tmp_path / str(coef), peft_config=peft, decorrelation_site=site, decorrelation_coef=coef)
        batch = next(iter(t.get_train_dataloader()))
        t.compute_loss(t.model, batch).backward()
        weight = t.model.get_submodule(f"base_model.model.model.layers.1.{site}").weight
        return weight.grad.clone(), t

    without, _ = grads(0.0)
    with_penalty, t = grads(1.0)
    assert t.decorrelation_capture.stats["captured"] == 1
    assert not torch.allclose(with_penalty, without)


def test_a_site_typo_with_peft_fails_before_trl_processes_the_data(tmp_path, monkeypatch):
    from trl import DPOTrainer

    monkeypatch.setattr(DPOTrainer, "_prepare_dataset", lambda *a, **k: pytest.fail("dataset processed first"))
    with pytest.raises(ValueError, match="matches no module"):
        trainer(
            tmp_path,
            decorrelation_site="mlp.up_prj",
            peft_config=LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"),
        )


@pytest.mark.parametrize(
    "probes,match",
    [
        ([], r"at least 2 probe prompts, got 0"),
        (["only one"], r"at least 2 probe prompts, got 1"),
        ("EMPTY_FILE", r"no prompts|empty|at least 2"),
    ],
)
def test_empty_probe_set(tmp_path, probes, match):
    if probes == "EMPTY_FILE":
        probes = str(tmp_path / "probes.txt")
        (tmp_path / "probes.txt").write_text("\n")
    t = trainer(tmp_path)
    with pytest.raises(ValueError, match=match):
        MonosemanticityCallback(t, probes=probes)


def test_the_count():
    assert len(CONFIG_CASES) + len(COMBINATION_CASES) == 27
    assert len(SETUP_CASES) + 3 == 11  # + empty probes (3)
