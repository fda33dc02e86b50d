"""Pins every assumption `trl_decpo/compat.py` makes about TRL and transformers internals.

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
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

from tests.helpers import base_kwargs, checkpointing, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOConfig, compat


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


def test_4_log_merges_and_clears_only_the_current_modes_metrics(tmp_path):
    trainer = dpo_trainer(tmp_path)
    trainer._metrics["train"]["probe/value"].extend([1.0, 3.0])
    trainer._metrics["eval"]["probe/eval_value"].append(7.0)
    trainer.model.train()
    trainer.log({})
    assert trainer.state.log_history[-1]["probe/value"] == 2.0, "assumption 4 broken: metrics not averaged by log"
    assert "eval_probe/eval_value" not in trainer.state.log_history[-1], "assumption 4 broken: eval merged in train"
    assert not trainer._metrics["train"], "assumption 4 broken: metrics not cleared by log"
    assert trainer._metrics["eval"]["probe/eval_value"] == [7.0], "assumption 4 broken: the other mode cleared"


def test_5_log_outside_step_keeps_should_log_and_the_training_metrics(tmp_path):
    trainer = dpo_trainer(tmp_path)
    trainer.model.train()
    trainer._metrics["train"]["probe/value"].append(5.0)
    trainer.control.should_log = True
    trainer.log({"plain": 1.0})  # what log_outside_step guards against
    assert trainer.control.should_log is False, "assumption 5 changed: Trainer.log no longer clears should_log"
    trainer._metrics["train"]["probe/value"].append(5.0)
    trainer.control.should_log = True
    compat.log_outside_step(trainer, {"outside": 1.0})
    assert trainer.control.should_log is True and trainer.model.training
    assert trainer._metrics["train"]["probe/value"] == [5.0]
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
    """Plain DPOTrainer flips `use_reentrant` to True in place (it then stops at DeepSpeed's import, which CI lacks),
    and the value is seen under the new name. If TRL stops forcing it, this fails: update docs/reliability.md."""
    from types import SimpleNamespace
    from unittest import mock

    from accelerate.state import AcceleratorState

    args = DPOConfig(**{**base_kwargs(tmp_path), **checkpointing(True, {"use_reentrant": False})})
    args.deepspeed_plugin = SimpleNamespace(zero_stage=3)
    compat.set_checkpointing_kwargs(args, {"use_reentrant": False})  # as DecPOTrainer does before TRL runs
    peft = LoraConfig(r=2, target_modules=["q_proj", "up_proj"], task_type="CAUSAL_LM")
    with mock.patch.dict(os.environ):  # the failed Accelerator setup leaves ACCELERATE_USE_DEEPSPEED behind
        with pytest.raises(Exception):  # noqa: B017 - DeepSpeed is not installed: Accelerator creation fails after it
            dpo_trainer(tmp_path, args=args, peft_config=peft)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert args.gradient_checkpointing_kwargs["use_reentrant"] is True, "assumption 7 broken: TRL no longer forces it"
    assert compat.checkpointing_settings(args)[1]["use_reentrant"] is True, "assumption 7: not seen under the new name"


def test_8_dpo_card_identity_and_card_file(tmp_path):
    identity = compat.trainer_card_identity(DPOTrainer)
    assert "dpo" in identity["tags"] and identity["name"] == "DPO", f"assumption 8 broken: {identity}"
    citation = identity["paper"]["citation"]
    assert citation.lstrip().startswith(("@inproceedings", "@article")), f"assumption 8 broken: {citation!r}"
    trainer = dpo_trainer(tmp_path)
    compat.set_card_identity(trainer, name="Probe", tags=["trl", "probe-tag"], paper=identity["paper"])
    trainer.create_model_card(model_name="tiny")
    card = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "probe-tag" in card, "assumption 8 broken: create_model_card no longer reads _tag_names"
    assert "trained with Probe" in card, "assumption 8 broken: create_model_card no longer reads _name"


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


def test_13_trl_gradient_accumulation_scaling_is_as_assumed():
    """GRPO scales its loss for gradient accumulation; DPO-like trainers leave it to the Trainer; SFT decides per call.
    If this changes, the penalty's scaling in DecorrelationMixin.compute_loss must follow."""
    assert trl.GRPOTrainer.loss_is_scaled_for_ga is True, "assumption 13 broken"
    assert trl.KTOTrainer.loss_is_scaled_for_ga is False, "assumption 13 broken"
    assert trl.RewardTrainer.loss_is_scaled_for_ga is False, "assumption 13 broken"
    assert trl.RLOOTrainer.loss_is_scaled_for_ga is False, "assumption 13 broken"
    assert trl.SFTTrainer.loss_is_scaled_for_ga is None, "assumption 13 broken"


def test_14_kto_kl_forward_is_a_method_of_model_and_batch():
    parameters = list(inspect.signature(trl.KTOTrainer._compute_kl_logps).parameters)
    assert parameters == ["self", "model", "batch"], f"assumption 14 broken: {parameters}"
    source = inspect.getsource(trl.KTOTrainer.compute_loss) + inspect.getsource(trl.KTOTrainer)
    assert "self._compute_kl_logps(model, batch)" in source, "assumption 14 broken: KTO no longer calls it so"


@pytest.mark.parametrize("name", ["SFTTrainer", "KTOTrainer", "RewardTrainer", "GRPOTrainer", "RLOOTrainer"])
def test_15_other_trainers_card_identity_and_log_are_dpos(name):
    trainer_class = getattr(trl, name)
    identity = compat.trainer_card_identity(trainer_class)
    assert isinstance(identity["tags"], list) and isinstance(identity["name"], str), f"assumption 15 broken: {name}"
    source = inspect.getsource(trainer_class.log)
    assert 'mode = "train" if self.model.training else "eval"' in source, f"assumption 15 broken: {name}.log"
    assert "self._metrics[mode].clear()" in source, f"assumption 15 broken: {name}.log"


def test_17_dpo_prepares_and_collates_eval_pairs_as_the_evaluation_does(tmp_path):
    """`trl_decpo.evaluation.preference` prepares pairs as DPOTrainer's private `_prepare_dataset` does and collates them
    with the class DPOTrainer collates with; tests/evaluation/test_preference*.py compare batches and metrics on three
    tokenizers, this pins the two facts by name."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from trl_decpo.evaluation.preference import collate_pairs, tokenize_pairs

    data, tokenizer = make_dataset(), make_tokenizer()
    with pytest.warns(FutureWarning, match="keep_end"):
        args = DPOConfig(**{**base_kwargs(tmp_path), "max_length": 6, "truncation_mode": "keep_end"})
    trainer = DPOTrainer(
        model=make_model(), args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer
    )
    collator = trainer.data_collator
    assert type(collator) is DataCollatorForPreference, f"assumption 17 broken: {type(collator)}"
    settings = (collator.pad_token_id, collator.max_length, collator.truncation_mode)
    assert settings == (tokenizer.pad_token_id, 6, "keep_end"), f"assumption 17 broken: {settings}"
    assert type(compat.dpo_collator(*settings)) is type(collator), "assumption 17: the evaluation's collator differs"
    ours = tokenize_pairs(tokenizer, data)
    theirs = trainer.eval_dataset
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert [row[key] for row in ours] == theirs[key], f"assumption 17 broken: {key} differs from DPOTrainer's"
    batch, their_batch = collate_pairs(ours[:3], tokenizer.pad_token_id, 6, "keep_end"), collator(ours[:3])
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(batch[key], their_batch[key]), f"assumption 17 broken: collated {key}"


def test_18_trl_resolves_accelerate_presets_and_argparse_lists_its_options():
    from accelerate.commands.launch import launch_command_parser

    resolved = compat.resolve_accelerate_config(["--accelerate_config", "multi_gpu", "--num_processes", "2"])
    assert resolved[0] == "--config_file" and resolved[1].endswith("multi_gpu.yaml"), (
        f"assumption 18 broken: {resolved}"
    )
    assert os.path.isfile(resolved[1]) and resolved[2:] == ["--num_processes", "2"], "assumption 18 broken"
    options = compat.parser_options(launch_command_parser())
    assert options["--num_processes"] is True and options["--multi_gpu"] is False, "assumption 18 broken: _actions"
