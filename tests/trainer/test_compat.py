"""Pins every assumption `trl_decpo/trainer/compat.py` makes about TRL and transformers internals.

Each test names its assumption (the numbers are those of the module's docstring). When one fails after an upgrade of
TRL or transformers, update `compat.py` (and whatever relies on it), not the test's expectation.
"""

import dataclasses
import inspect
import os
import re
import warnings

import pytest
import torch
import trl
from conftest import base_kwargs, checkpointing, make_dataset, make_model, make_tokenizer
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

from trl_decpo import DecPOConfig
from trl_decpo.trainer import compat


def dpo_trainer(tmp_path, **kwargs):
    args = kwargs.pop("args", None) or DPOConfig(**base_kwargs(tmp_path))
    return DPOTrainer(
        model=kwargs.pop("model", None) or make_model(),
        args=args,
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
        **kwargs,
    )


@pytest.mark.parametrize(
    "name", ["DPOTrainer", "SFTTrainer", "KTOTrainer", "RewardTrainer", "GRPOTrainer", "RLOOTrainer"]
)
def test_1_trainer_init_signatures_name_the_arguments_decorrelation_reads(name):
    trainer_class = getattr(trl, name)
    names = set(inspect.signature(trainer_class.__init__).parameters)
    read = {"model", "args", "train_dataset", "eval_dataset", "peft_config"}
    assert read <= names, f"assumption 1 broken: {name}.__init__ lacks {read - names}"
    required = {"reward_funcs": "r"} if "reward_funcs" in names else {}  # online trainers
    bound = compat.bind_trainer_arguments(trainer_class, ("m",), {"args": "a", "peft_config": "p", **required})
    assert (bound.arguments["model"], bound.arguments["args"], bound.arguments["peft_config"]) == ("m", "a", "p")


def forward_order(trainer, models):
    """Which of `models` (name -> module) ran a forward, in order, during one compute_loss."""
    order = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: order.append(name)) for name, module in models.items()
    ]
    try:
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    finally:
        for handle in handles:
            handle.remove()
    return order


def test_2_policy_forward_runs_before_a_separate_reference_forward(tmp_path):
    policy, reference = make_model(), make_model()
    trainer = dpo_trainer(tmp_path, model=policy, ref_model=reference)
    order = forward_order(trainer, {"policy": trainer.model, "reference": trainer.ref_model})
    assert order[:1] == ["policy"] and "reference" in order, f"assumption 2 broken: forward order {order}"


def test_2_policy_forward_runs_before_the_disabled_adapter_reference_forward(tmp_path):
    peft = LoraConfig(r=2, target_modules=["up_proj"], task_type="CAUSAL_LM")
    trainer = dpo_trainer(tmp_path, peft_config=peft)
    lora = next(m for name, m in trainer.model.named_modules() if name.endswith("layers.0.mlp.up_proj"))
    adapters = []
    handle = lora.register_forward_hook(lambda module, *_: adapters.append(not module.disable_adapters))
    try:
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    finally:
        handle.remove()
    assert adapters == [True, False], f"assumption 2 broken: adapter enabled per forward {adapters}"


def test_2_policy_forward_runs_before_the_ref_adapter_forward_of_a_peft_model(tmp_path):
    """A PeftModel passed in (adapter trained again): TRL copies its adapter to "ref" for the reference forward."""
    from peft import get_peft_model

    model = get_peft_model(make_model(), LoraConfig(r=2, target_modules=["up_proj"], task_type="CAUSAL_LM"))
    trainer = dpo_trainer(tmp_path, model=model)
    lora = next(m for name, m in trainer.model.named_modules() if name.endswith("layers.0.mlp.up_proj"))
    active = []
    handle = lora.register_forward_hook(lambda module, *_: active.append(list(module.active_adapters)))
    try:
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    finally:
        handle.remove()
    assert active == [["default"], ["ref"]], f"assumption 2 broken: active adapters per forward {active}"


def test_3_batches_hold_chosen_then_rejected_with_the_masks_decpo_reads(tmp_path):
    trainer = dpo_trainer(tmp_path)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    masks = compat.batch_masks(batch)
    assert masks["attention_mask"] is not None and masks["completion_mask"] is not None, (
        f"assumption 3 broken: batch keys {sorted(batch)}"
    )
    tokenizer, rows = make_tokenizer(), make_dataset()

    def decoded(texts):
        return {tokenizer.decode(tokenizer(t)["input_ids"], skip_special_tokens=True).strip() for t in texts}

    pairs = len(batch["input_ids"]) // 2
    for i in range(pairs):
        completion = batch["input_ids"][i][batch["completion_mask"][i].bool()]
        rejected = batch["input_ids"][pairs + i][batch["completion_mask"][pairs + i].bool()]
        text, text_rejected = (tokenizer.decode(ids, skip_special_tokens=True) for ids in (completion, rejected))
        assert text.strip() in decoded(rows["chosen"]), f"assumption 3 broken: row {i} is {text!r}"
        assert text_rejected.strip() in decoded(rows["rejected"]), "assumption 3 broken: second half"


def test_4_metrics_store_is_averaged_and_cleared_by_log_for_the_current_mode(tmp_path):
    trainer = dpo_trainer(tmp_path)
    store = compat.metrics_store(trainer, "train")
    store["probe/value"].extend([1.0, 3.0])
    trainer.model.train()
    trainer.log({})
    assert trainer.state.log_history[-1]["probe/value"] == 2.0, "assumption 4 broken: _metrics not averaged by log"
    assert not compat.metrics_store(trainer, "train"), "assumption 4 broken: _metrics not cleared by log"


def test_5_log_outside_step_keeps_should_log_and_the_training_metrics(tmp_path):
    trainer = dpo_trainer(tmp_path)
    trainer.model.train()
    compat.metrics_store(trainer, "train")["probe/value"].append(5.0)
    trainer.control.should_log = True
    trainer.log({"plain": 1.0})  # what log_outside_step guards against
    assert trainer.control.should_log is False, "assumption 5 changed: Trainer.log no longer clears should_log"
    compat.metrics_store(trainer, "train")["probe/value"].append(5.0)
    trainer.control.should_log = True
    compat.log_outside_step(trainer, {"outside": 1.0})
    assert trainer.control.should_log is True and trainer.model.training
    assert compat.metrics_store(trainer, "train")["probe/value"] == [5.0]
    assert trainer.state.log_history[-1]["outside"] == 1.0 and "probe/value" not in trainer.state.log_history[-1]


def test_6_checkpointing_settings_under_either_name(tmp_path):
    kwargs = {k: v for k, v in base_kwargs(tmp_path).items() if "checkpointing" not in k}
    with pytest.warns(
        FutureWarning, match="`gradient_checkpointing(_kwargs)?` is deprecated"
    ):  # old names, on purpose
        args = DPOConfig(**kwargs, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True})
    assert compat.checkpointing_settings(args) == (True, {"use_reentrant": True}), "assumption 6 broken"
    assert args.gradient_checkpointing_kwargs is args.activation_checkpointing_kwargs, "assumption 6: not aliases"
    compat.set_checkpointing_kwargs(args, {"use_reentrant": False})
    assert compat.checkpointing_settings(args) == (True, {"use_reentrant": False})
    assert args.gradient_checkpointing_kwargs is args.activation_checkpointing_kwargs
    args.gradient_checkpointing_kwargs["use_reentrant"] = True  # TRL writes the old name in place (assumption 7)
    assert compat.checkpointing_settings(args) == (True, {"use_reentrant": True})


def test_7_trl_still_forces_reentrant_checkpointing_for_peft_with_zero3(tmp_path):
    """Plain DPOTrainer flips `use_reentrant` to True (it then stops at DeepSpeed's import, which CI lacks). If TRL
    stops forcing it, this fails: update `trl_forces_reentrant` and docs/reliability.md."""
    from types import SimpleNamespace
    from unittest import mock

    from accelerate.state import AcceleratorState

    args = DPOConfig(**{**base_kwargs(tmp_path), **checkpointing(True, {"use_reentrant": False})})
    args.deepspeed_plugin = SimpleNamespace(zero_stage=3)
    compat.set_checkpointing_kwargs(args, {"use_reentrant": False})  # as DecPOTrainer does before TRL runs
    peft = LoraConfig(r=2, target_modules=["q_proj", "up_proj"], task_type="CAUSAL_LM")
    assert compat.trl_forces_reentrant(make_model(), args, peft)
    with mock.patch.dict(os.environ):  # the failed Accelerator setup leaves ACCELERATE_USE_DEEPSPEED behind
        with pytest.raises(Exception):  # noqa: B017 - DeepSpeed is not installed: Accelerator creation fails after it
            dpo_trainer(tmp_path, args=args, peft_config=peft)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert args.gradient_checkpointing_kwargs["use_reentrant"] is True, "assumption 7 broken: TRL no longer forces it"
    assert compat.checkpointing_settings(args)[1]["use_reentrant"] is True, "assumption 7: not seen under the new name"


def test_8_dpo_card_identity_and_card_file(tmp_path):
    identity = compat.dpo_card_identity()
    assert "dpo" in identity["_tag_names"] and identity["_name"] == "DPO", f"assumption 8 broken: {identity}"
    citation = compat.trainer_citation(DPOTrainer)
    assert citation.lstrip().startswith(("@inproceedings", "@article")), f"assumption 8 broken: {citation!r}"
    trainer = dpo_trainer(tmp_path)
    trainer.create_model_card(model_name="tiny")
    assert os.path.isfile(os.path.join(trainer.args.output_dir, "README.md")), "assumption 8 broken: no README.md"


def test_9_pad_token_id_is_the_collators(tmp_path):
    trainer = dpo_trainer(tmp_path)
    assert compat.trainer_pad_token_id(trainer) == make_tokenizer().pad_token_id, "assumption 9 broken"


def test_8_callbacks_of_a_trainer(tmp_path):
    from transformers import TrainerCallback

    trainer = dpo_trainer(tmp_path)
    marker = TrainerCallback()
    trainer.add_callback(marker)
    assert marker in compat.trainer_callbacks(trainer), "assumption 8 broken: callback_handler.callbacks"


def test_10_default_output_dir_is_dpotrainers(monkeypatch):
    import trl.trainer.dpo_trainer as dpo_module

    seen = []

    class Recorder(Exception):
        pass

    def record(output_dir, *args, **kwargs):
        seen.append(output_dir)
        raise Recorder  # DPOConfig's own defaults (bf16) would fail on CPU: the name is what is pinned

    monkeypatch.setattr(dpo_module, "DPOConfig", record)
    model = make_model()
    with pytest.raises(Recorder):
        DPOTrainer(model=model, train_dataset=make_dataset(), processing_class=make_tokenizer())
    assert seen == [compat.default_output_dir(model, "DPO")], f"assumption 10 broken: {seen}"


def test_11_dpotrainer_tokenizes_prompts_as_probes_and_needs_text_columns(tmp_path):
    from datasets import Dataset

    from trl_decpo.monosemanticity.probes import tokenize_prompts

    trainer = dpo_trainer(tmp_path)
    prompt_ids = trainer.train_dataset["prompt_ids"]
    assert tokenize_prompts(make_dataset()["prompt"], make_tokenizer()) == prompt_ids, "assumption 11: prompt_ids"
    tokenized = Dataset.from_dict({"prompt_ids": [[3, 4]], "chosen_ids": [[5]], "rejected_ids": [[6]]})
    with pytest.raises(KeyError):  # if TRL accepts these, let `check_preference_columns` accept them too
        DPOTrainer(
            model=make_model(),
            args=DPOConfig(**base_kwargs(tmp_path)),
            train_dataset=tokenized,
            processing_class=make_tokenizer(),
        )


def test_12_ddp_reads_the_ignore_list_attribute():
    source = inspect.getsource(torch.nn.parallel.DistributedDataParallel)
    assert "_ddp_params_and_buffers_to_ignore" in source, "torch DDP no longer reads the ignore list"
    model = make_model()
    model.register_buffer("flag", torch.zeros(2, dtype=torch.bool))
    compat.ignore_bool_buffers_in_ddp(model)
    assert model._ddp_params_and_buffers_to_ignore == ["flag"]


def deprecated_checkpointing_calls(call) -> set[str]:
    """The deprecated model methods whose transformers FutureWarning ``call()`` raised (every one: "always")."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    found = (re.match(compat.DEPRECATED_CHECKPOINTING_CALLS, str(w.message)) for w in caught)
    return {match.group(1) for match, w in zip(found, caught, strict=True) if match and w.category is FutureWarning}


def test_16_trl_configs_default_checkpointing_under_the_deprecated_name(tmp_path):
    """If this fails, TRL moved its default to `activation_checkpointing`: drop `adopt_trl_checkpointing_default`."""
    for config in (DPOConfig, trl.SFTConfig, trl.KTOConfig, trl.RewardConfig, trl.GRPOConfig, trl.RLOOConfig):
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        assert (defaults["gradient_checkpointing"], defaults["activation_checkpointing"]) == (True, None), (
            f"assumption 16 broken: {config.__name__}'s checkpointing defaults changed"
        )
    kwargs = {k: v for k, v in base_kwargs(tmp_path).items() if "checkpointing" not in k}
    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated"):
        DPOConfig(**kwargs)  # TRL's own config: transformers warns about TRL's default
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = DecPOConfig(**kwargs)
    assert not [str(w.message) for w in caught if "checkpointing" in str(w.message)]
    assert (args.activation_checkpointing, args.gradient_checkpointing) == (True, True)  # on, under both names
    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated"):  # the user's own old name warns
        off = DecPOConfig(**kwargs, gradient_checkpointing=False)
    assert compat.checkpointing_settings(off)[0] is False


def test_16_trl_and_peft_call_the_deprecated_checkpointing_methods(tmp_path):
    """If the first assertion of a pair fails, TRL or PEFT calls the new names (or transformers reworded its warning):
    drop (or update) `quiet_deprecated_checkpointing_calls`."""
    from peft import get_peft_model

    def peft_model():
        return get_peft_model(make_model(), LoraConfig(r=2, target_modules=["up_proj"], task_type="CAUSAL_LM"))

    assert deprecated_checkpointing_calls(peft_model) == {"is_gradient_checkpointing"}, "assumption 16 (PEFT)"
    args = DPOConfig(**{**base_kwargs(tmp_path), **checkpointing(True), "max_steps": 1})
    trainer = dpo_trainer(tmp_path, args=args)

    def step():
        trainer.train()  # one step, with activation checkpointing on (Trainer turns it on in `train`)

    methods = {"is_gradient_checkpointing", "gradient_checkpointing_disable", "gradient_checkpointing_enable"}
    assert deprecated_checkpointing_calls(step) == methods, "assumption 16 (TRL's DPO step)"

    def quiet(call):
        with compat.quiet_deprecated_checkpointing_calls():
            call()

    assert deprecated_checkpointing_calls(lambda: quiet(peft_model)) == set()
    assert deprecated_checkpointing_calls(lambda: quiet(step)) == set()

    def others():  # the same text from another module, and another FutureWarning: still shown
        warnings.warn_explicit(
            "`is_gradient_checkpointing` is deprecated", FutureWarning, "mine.py", 1, module="mine", registry={}
        )
        warnings.warn("something else is deprecated", FutureWarning)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet(others)
    assert len(caught) == 2
