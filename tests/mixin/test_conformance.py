"""Conformance: the DPO features users rely on, each run twice on the same tiny model and data, once with TRL's
`DPOConfig` / `DPOTrainer` and once with `DecPOConfig` / `DecPOTrainer` (penalty on, default settings otherwise).

Asserted of both, as TRL asserts of DPOTrainer: training finishes (or fails with the same error), the trainable
parameters move, DPO's metrics are logged; of DecPO in addition: the penalty is logged, finite, in every logged step
(and in evaluation where there is one), and every metric DPO logs is logged by DecPO too.
"""

import math
import os

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from trl import DPOConfig, DPOTrainer

from tests.helpers import (
    CHAT_TEMPLATE,
    base_kwargs,
    custom_code_model,
    make_dataset,
    make_model,
    make_tokenizer,
    model_path,
)
from trl_decpo import DecPOConfig, DecPOTrainer
from trl_decpo.testing import tiny_family_model


def conversational(n=8, tools=False, template_kwargs=False):
    rows = make_dataset(n)
    data = {
        "prompt": [[{"role": "user", "content": p}] for p in rows["prompt"]],
        "chosen": [[{"role": "assistant", "content": c.strip()}] for c in rows["chosen"]],
        "rejected": [[{"role": "assistant", "content": r.strip()}] for r in rows["rejected"]],
    }
    if tools:
        tool = {"type": "function", "function": {"name": "answer", "description": "say yes or no", "parameters": {}}}
        data["tools"] = [[tool]] * n
    if template_kwargs:
        data["chat_template_kwargs"] = [{"enable_thinking": False}] * n
    return Dataset.from_dict(data)


def chat_tokenizer():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def remote_code_model():
    """A model folder whose `auto_map` names modelling code in the folder (it writes a marker when it runs)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="decpo-remote-code-")
    custom_code_model(os.path.join(folder, "model"), os.path.join(folder, "marker.txt"))
    return os.path.join(folder, "model")


def peft_config():
    return LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "up_proj"], task_type="CAUSAL_LM")


# name -> (config overrides, trainer keyword builder, whether to evaluate after training)
CASES = {
    "several loss types with weights": ({"loss_type": ["sigmoid", "bco_pair"], "loss_weights": [0.8, 0.2]}, {}, False),
    "ld_alpha": ({"ld_alpha": 0.5}, {}, False),
    "f_divergence_type": ({"f_divergence_type": "js_divergence"}, {}, False),
    "use_weighting": ({"use_weighting": True}, {}, False),
    "label_smoothing": ({"label_smoothing": 0.1}, {}, False),
    "precompute_ref_log_probs, evaluated after training": ({"precompute_ref_log_probs": True}, {}, True),
    "explicit ref_model": ({}, {"ref_model": lambda: make_model(seed=1)}, False),
    "sync_ref_model": ({"sync_ref_model": True, "ref_model_sync_steps": 1, "ref_model_mixup_alpha": 0.5}, {}, False),
    "ref_model=None with a peft_config": ({}, {"peft_config": peft_config}, True),
    "a PEFT model passed in": ({}, {"model": lambda: get_peft_model(make_model(), peft_config())}, False),
    "iterable train dataset": ({}, {"train_dataset": lambda: make_dataset(16).to_iterable_dataset()}, False),
    "several eval datasets": ({}, {"eval_dataset": lambda: {"a": make_dataset(4), "b": make_dataset(6)}}, True),
    "compute_metrics": ({}, {"compute_metrics": lambda: lambda prediction: {"probe": 1.0}}, True),
    "conversational data with chat_template_kwargs": (
        {},
        {"train_dataset": lambda: conversational(template_kwargs=True), "processing_class": chat_tokenizer},
        False,
    ),
    "tool-call data": (
        {},
        {"train_dataset": lambda: conversational(tools=True), "processing_class": chat_tokenizer},
        False,
    ),
    "fully truncated examples dropped": ({"max_length": 4, "truncation_mode": "keep_start"}, {}, False),
    "pad_to_multiple_of": ({"pad_to_multiple_of": 8}, {}, False),
    "truncation_mode keep_start": ({"max_length": 8, "truncation_mode": "keep_start"}, {}, False),
    "model as a string with model_init_kwargs": (
        {"model_init_kwargs": {"dtype": torch.float32}},
        {"model": model_path},
        False,
    ),
    "trust_remote_code with code shipped in the model folder": (
        {"trust_remote_code": True},
        {"model": lambda: remote_code_model()},
        False,
    ),
    "padding_free (disabled by TRL 1.16 for DPO)": ({"padding_free": True}, {}, False),
    "4-bit QLoRA": (
        {"model_init_kwargs": {"quantization_config": "4bit", "dtype": torch.float32}},
        {"model": lambda: model_path("llama64"), "peft_config": peft_config},
        False,
    ),
}


def run(tmp_path, config_class, trainer_class, overrides, builders, evaluate, **decpo):
    kwargs = {**base_kwargs(tmp_path), "max_steps": 2, **overrides, **decpo}
    init = kwargs.get("model_init_kwargs") or {}
    if init.get("quantization_config") == "4bit":  # a fresh config object per run
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
        kwargs["model_init_kwargs"] = {**init, "quantization_config": quantization}
    kwargs["output_dir"] = str(tmp_path / trainer_class.__name__)
    built = {name: build() for name, build in builders.items()}
    model = built.pop("model", None) or make_model()
    trainer = trainer_class(
        model=model,
        args=config_class(**kwargs),
        train_dataset=built.pop("train_dataset", None) or make_dataset(16),
        eval_dataset=built.pop("eval_dataset", None) or (make_dataset(4) if evaluate else None),
        processing_class=built.pop("processing_class", None) or make_tokenizer(),
        **built,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    metrics = trainer.evaluate() if evaluate else {}
    return trainer, moved, metrics


# The `compute_metrics` case makes TRL recompute the logits, which it deprecates (and says so) for both trainers alike
@pytest.mark.filterwarnings(
    "ignore:`return_outputs=True`, and the logits it passes to `compute_metrics`:FutureWarning"
)
@pytest.mark.parametrize("case", list(CASES))
def test_decpo_does_what_dpo_does(tmp_path, case):
    overrides, builders, evaluate = CASES[case]
    dpo, dpo_moved, dpo_metrics = run(tmp_path, DPOConfig, DPOTrainer, overrides, builders, evaluate)
    decpo, moved, metrics = run(
        tmp_path, DecPOConfig, DecPOTrainer, overrides, builders, evaluate, decorrelation_coef=1.0
    )
    assert decpo.state.global_step == dpo.state.global_step == 2
    if hasattr(dpo.train_dataset, "__len__"):  # the same examples kept (and dropped) by both
        assert decpo.train_dataset["prompt_ids"] == dpo.train_dataset["prompt_ids"]
        if case == "fully truncated examples dropped":
            assert 0 < len(decpo.train_dataset) < 16
    if case.startswith("trust_remote_code"):  # the folder's own model class ran
        assert type(decpo.model).__name__ == type(dpo.model).__name__ == "CustomForCausalLM"
    assert dpo_moved and set(moved) == set(dpo_moved)  # the same trainable parameters moved
    steps = [h for h in decpo.state.log_history if "loss" in h]
    dpo_keys = {k for h in dpo.state.log_history if "loss" in h for k in h}
    assert dpo_keys <= {k for h in steps for k in h}, dpo_keys - {k for h in steps for k in h}
    assert len(steps) == 2 and all(math.isfinite(h["decorrelation/penalty"]) for h in steps)
    if evaluate:
        penalties = [k for k in metrics if k.endswith("decorrelation/penalty")]
        assert penalties and all(math.isfinite(metrics[k]) for k in penalties)
        assert set(dpo_metrics) <= set(metrics), set(dpo_metrics) - set(metrics)


PAIRS = ((DPOConfig, DPOTrainer), (DecPOConfig, DecPOTrainer))


def test_moe_router_aux_loss(tmp_path):
    """`router_aux_loss_coef` on a mixture-of-experts model, side by side: DPO's auxiliary loss is logged by both, the
    penalty by DecPO, and the same parameters move."""
    model, tokenizer = tiny_family_model("mixtral")
    model.save_pretrained(tmp_path / "mixtral")
    results = {}
    for config_class, trainer_class in PAIRS:
        trainer = trainer_class(
            model=type(model).from_pretrained(tmp_path / "mixtral", dtype=torch.float32),
            args=config_class(**{**base_kwargs(tmp_path / trainer_class.__name__), "router_aux_loss_coef": 0.01}),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
        )
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        steps = [h for h in trainer.state.log_history if "loss" in h]
        moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
        results[trainer_class] = (steps, moved)
    (dpo_steps, dpo_moved), (steps, moved) = results[DPOTrainer], results[DecPOTrainer]
    assert all("aux_loss" in h for h in dpo_steps + steps)
    assert all("decorrelation/penalty" in h for h in steps) and moved == dpo_moved


def outcome(call):
    try:
        call()
        return "ok"
    except Exception as err:  # noqa: BLE001 - whatever DPOTrainer raises, DecPOTrainer must raise too
        return type(err).__name__


def test_activation_offloading_behaves_as_with_dpo(tmp_path):
    """TRL's activation offloading installs its own saved-tensor hooks and needs an accelerator (CUDA, XPU, ...): on a
    CPU-only machine DPOTrainer fails (when it sets the offloading up), and DecPOTrainer the same way."""

    def construct_and_train(config_class, trainer_class):
        trainer_class(
            model=make_model(),
            args=config_class(**{**base_kwargs(tmp_path), "activation_offloading": True}),
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
        ).train()

    results = [outcome(lambda c=c, t=t: construct_and_train(c, t)) for c, t in PAIRS]
    assert results[0] == results[1]
    if torch.accelerator.current_accelerator() is not None:
        assert results == ["ok", "ok"]


@pytest.mark.filterwarnings("ignore:`use_liger_kernel=True` is deprecated:FutureWarning")  # the option under test
def test_liger_kernels_fail_the_same_way_without_liger(tmp_path):
    """Liger kernels need the `liger-kernel` package (and a GPU to matter): where it is missing, DecPOTrainer fails as
    DPOTrainer does, at construction (docs/reliability.md lists what CPU cannot run)."""
    outcomes = [
        outcome(
            lambda config_class=config_class, trainer_class=trainer_class: trainer_class(
                model=make_model(),
                args=config_class(**{**base_kwargs(tmp_path), "use_liger_kernel": True}),
                train_dataset=make_dataset(),
                processing_class=make_tokenizer(),
            )
        )
        for config_class, trainer_class in PAIRS
    ]
    assert outcomes[0] == outcomes[1]
