"""DecPOTrainer: gradients, what is captured, loss types, metrics, hooks, model card."""

import os

import pytest
import torch
from peft import LoraConfig
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from tests.helpers import base_kwargs, checkpointing, decpo_config, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOConfig, DecPOTrainer
from trl_decpo.capture import ActivationCapture, build_row_index, count_decpo_hooks, resolve_sites
from trl_decpo.compat import checkpointing_settings
from trl_decpo.penalty import decorrelation_penalty


LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM")


class GradCapture(TrainerCallback):
    """Copies the accumulated gradients right before the first optimizer step."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


class Recording(DecPOTrainer):
    """Records the batches its compute_loss sees."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen = getattr(self, "seen", []) + [{k: v.detach().clone() for k, v in inputs.items()}]
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def one_step(tmp_path, coef, peft=False, ref_model=None, model=None, **overrides):
    """Train one optimizer step with lr 0 and no clipping; returns the trainer and the gradients it produced."""
    overrides = {"max_steps": 1, "learning_rate": 0.0, "max_grad_norm": 0.0, **overrides}
    args = decpo_config(tmp_path / f"c{coef}", decorrelation_coef=coef, **overrides)
    grads = GradCapture()
    trainer = Recording(
        model=model or make_model(),
        ref_model=ref_model,
        args=args,
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
        peft_config=LoraConfig(**LORA) if peft else None,
        callbacks=[grads],
    )
    trainer.train()
    assert grads.grads, "no gradient was produced"
    return trainer, grads.grads


def reference_penalty_grads(trainer, scale):
    """d(scale * sum_batches penalty)/d(params), computed outside the trainer on the batches it saw."""
    model, args = trainer.model, trainer.args
    model.zero_grad()
    if checkpointing_settings(args)[0] or trainer.decorrelation_capture.without_grad:
        model.activation_checkpointing_disable()  # a reentrant checkpoint would capture rows without a gradient
    sites = resolve_sites(model, args.decorrelation_layers, args.decorrelation_site)
    for batch in trainer.seen:
        index = build_row_index(
            args.decorrelation_pooling,
            args.decorrelation_sequences,
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            completion_mask=batch["completion_mask"],
            max_rows=args.decorrelation_max_rows,
        )
        with ActivationCapture(sites).capture(index) as rows:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        total = sum(
            decorrelation_penalty(
                rows[s.layer],
                normalize=args.decorrelation_normalize,
                reduction=args.decorrelation_reduction,
                target=args.decorrelation_target,
            )
            for s in sites
        )
        (scale * total).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_penalty_gradient(tmp_path, coef=0.5, peft=False, ga=1, **overrides):
    """grad(coef) - grad(0) must equal coef * grad(penalty) / ga, and must not be zero."""
    overrides.setdefault("per_device_train_batch_size", 4 // ga)
    base, g0 = one_step(tmp_path, 0.0, peft=peft, gradient_accumulation_steps=ga, **overrides)
    trainer, g1 = one_step(tmp_path, coef, peft=peft, gradient_accumulation_steps=ga, **overrides)
    assert len(trainer.seen) == ga
    for a, b in zip(base.seen, trainer.seen, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
    ref = reference_penalty_grads(trainer, coef / ga)
    assert set(g1) == set(g0)
    changed = 0
    for name in g1:
        diff = g1[name] - g0[name]
        assert torch.allclose(diff, ref.get(name, torch.zeros_like(diff)), atol=1e-5, rtol=1e-3), name
        changed += int(diff.abs().max() > 1e-7)
    assert changed > 0, "the penalty did not change any gradient"
    return g1


def test_gradient_reaches_weights_plain_model(tmp_path):
    assert_penalty_gradient(tmp_path)


def test_gradient_with_several_layers_computed_as_one_batch(tmp_path):
    """Several layers at one site are penalised in one batched computation; the gradient is the per-layer sum's."""
    assert_penalty_gradient(tmp_path, decorrelation_layers=[0, 2, 3])


def test_gradient_reaches_weights_peft_lora_without_ref_model(tmp_path):
    grads = assert_penalty_gradient(tmp_path, peft=True)
    assert all("lora_" in name for name in grads)


def test_gradient_with_non_reentrant_checkpointing_equals_without(tmp_path):
    plain = assert_penalty_gradient(tmp_path / "a")
    checkpointed = assert_penalty_gradient(tmp_path / "b", **checkpointing(True, {"use_reentrant": False}))
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_gradient_with_checkpointing_and_peft(tmp_path):
    assert_penalty_gradient(tmp_path, peft=True, **checkpointing(True))


def test_gradient_with_precomputed_reference(tmp_path):
    assert_penalty_gradient(tmp_path, precompute_ref_log_probs=True)


def test_gradient_accumulation_scales_penalty_like_dpo_loss(tmp_path):
    assert_penalty_gradient(tmp_path, ga=2)


def test_gradient_with_reentrant_checkpointing_equals_without(tmp_path):
    """Reentrant checkpointing runs the layers under no_grad: the penalty's gradient is injected at each hooked layer's
    recomputation in the backward, and equals the gradient without checkpointing (several layers, one injection
    each)."""
    layers = dict(decorrelation_layers=[1, 2])
    plain = assert_penalty_gradient(tmp_path / "a", **layers)
    reentrant = assert_penalty_gradient(tmp_path / "b", **layers, **checkpointing(True, {"use_reentrant": True}))
    for name in plain:
        assert torch.allclose(plain[name], reentrant[name], atol=1e-6), name


def test_gradient_with_reentrant_checkpointing_peft_and_accumulation(tmp_path):
    """LoRA under reentrant checkpointing (the recipe TRL forces under DeepSpeed ZeRO-3), two accumulated batches:
    the injected gradient is scaled as the trainer scales its loss."""
    reentrant = checkpointing(True, {"use_reentrant": True})
    plain = assert_penalty_gradient(tmp_path / "a", peft=True, ga=2)
    injected = assert_penalty_gradient(tmp_path / "b", peft=True, ga=2, **reentrant)
    for name in plain:
        assert torch.allclose(plain[name], injected[name], atol=1e-6), name


def test_default_checkpointing_is_made_non_reentrant(tmp_path):
    args = decpo_config(tmp_path, **checkpointing(True))
    DecPOTrainer(model=make_model(), args=args, train_dataset=make_dataset(), processing_class=make_tokenizer())
    assert checkpointing_settings(args) == (True, {"use_reentrant": False})


def test_reentrant_checkpointing_enabled_on_the_model_trains_with_the_penalty(tmp_path):
    """Reentrant checkpointing switched on on the model itself (as PEFT's `prepare_model_for_kbit_training` does):
    the step's gradient is the one without checkpointing, the loss and penalty logged are the same, and no hook stays."""
    model = make_model()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    _, plain = one_step(tmp_path / "a", 0.5)
    trainer, reentrant = one_step(tmp_path / "b", 0.5, model=model)
    for name in plain:
        assert torch.allclose(plain[name], reentrant[name], atol=1e-6), name
    assert trainer.decorrelation_capture.without_grad == {1}  # captured inside the checkpoint, gradient injected
    assert count_decpo_hooks(model) == 0


def test_a_reentrant_layer_that_is_never_recomputed_fails_the_step(tmp_path):
    """Reentrant checkpointing with nothing before the hooked layer requiring a gradient: the layer is never
    recomputed, so the penalty would get no gradient; the step fails before the optimizer moves a weight."""
    model = make_model()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.disable_input_require_grads()  # transformers made the embeddings' output require a gradient: undone
    for name, param in model.named_parameters():
        param.requires_grad_("layers.3." in name or name in ("lm_head.weight", "model.norm.weight"))
    trainer = DecPOTrainer(
        model=model,
        args=decpo_config(tmp_path, decorrelation_layers=[3]),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match=r"penalty at layers \[3\] got no gradient"):
        trainer.train()
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # no step was taken
    assert count_decpo_hooks(model) == 0


def test_peft_targets_after_the_hooked_layer_are_refused(tmp_path):
    lora = LoraConfig(r=4, target_modules=["up_proj"], layers_to_transform=[3], task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match="No trainable parameter lies at or before decoder layer 1"):
        DecPOTrainer(
            model=make_model(),
            args=decpo_config(tmp_path),
            train_dataset=make_dataset(),
            processing_class=make_tokenizer(),
            peft_config=lora,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Only the policy forward of the current compute_loss is captured (item 2)
# ----------------------------------------------------------------------------------------------------------------------


class SiteCallCounter:
    """A test hook on the hooked module: counts its calls and how many trl-decpo hooks were on the model then."""

    def __init__(self, module, model):
        self.calls, self.ours = 0, []
        self.handle = module.register_forward_hook(self)
        self.model = model

    def __call__(self, module, args, output):
        self.calls += 1
        self.ours.append(count_decpo_hooks(self.model))


def test_separate_ref_model_is_never_captured(tmp_path):
    ref = make_model()
    trainer, _ = one_step(tmp_path, 1.0, ref_model=ref, max_steps=3)
    assert trainer.decorrelation_capture.stats == {"captured": 3}
    assert count_decpo_hooks(ref) == 0 and count_decpo_hooks(trainer.model) == 0


def test_peft_reference_forward_is_ignored_and_rows_are_the_policy(tmp_path):
    lora = LoraConfig(**{**LORA, "init_lora_weights": False})  # the adapter changes the activations from step 0
    args = decpo_config(tmp_path, max_steps=2, learning_rate=0.0)
    trainer = Recording(
        model=make_model(),
        args=args,
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
        peft_config=lora,
    )
    counter = SiteCallCounter(trainer.decorrelation_sites[0].module, trainer.model)
    trainer.train()
    # per compute_loss: the policy forward (captured) and the adapter-disabled reference forward (ignored)
    assert trainer.decorrelation_capture.stats == {"captured": 2, "ignored": 2}
    assert counter.calls == 4 and counter.ours == [1, 1, 1, 1]
    logged = [h["decorrelation/penalty"] for h in trainer.state.log_history if "decorrelation/penalty" in h]
    batch = trainer.seen[0]
    index = build_row_index("last", "both", batch["input_ids"], attention_mask=batch["attention_mask"])
    model = trainer.model

    def penalty():
        with torch.no_grad(), ActivationCapture(trainer.decorrelation_sites).capture(index) as rows:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return decorrelation_penalty(rows[1], reduction="mean").item()

    policy = penalty()
    with model.disable_adapter():
        reference = penalty()
    assert abs(policy - reference) > 1e-4
    assert logged[0] == pytest.approx(policy, rel=1e-5)


def test_checkpoint_recomputation_and_later_forwards_are_not_captured(tmp_path):
    args = decpo_config(tmp_path, max_steps=2, **checkpointing(True))
    ref = make_model()
    trainer = DecPOTrainer(
        model=make_model(), ref_model=ref, args=args, train_dataset=make_dataset(), processing_class=make_tokenizer()
    )
    counter = SiteCallCounter(trainer.decorrelation_sites[0].module, trainer.model)
    trainer.train()
    # the module runs twice per step (forward + recomputation in backward); only the forward is captured
    assert counter.calls == 4
    assert counter.ours == [1, 0, 1, 0]
    assert trainer.decorrelation_capture.stats == {"captured": 2}
    with torch.no_grad():
        trainer.model(input_ids=torch.tensor([[3, 4, 5]]))
    assert trainer.decorrelation_capture.stats == {"captured": 2}


# ----------------------------------------------------------------------------------------------------------------------
# DPO features (items 6, 7): every loss type, metrics in train and eval
# ----------------------------------------------------------------------------------------------------------------------

LOSS_TYPES = [
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type_trains_with_the_penalty(tmp_path, loss_type):
    extra = {"label_smoothing": 1e-3} if loss_type == "exo_pair" else {}
    args = decpo_config(tmp_path, loss_type=[loss_type], decorrelation_coef=0.7, max_steps=1, **extra)
    trainer = DecPOTrainer(
        model=make_model(), args=args, train_dataset=make_dataset(), processing_class=make_tokenizer()
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with torch.no_grad():
        with_penalty = trainer.compute_loss(trainer.model, batch).item()
        penalty = trainer._decorrelation_metrics["train"]["decorrelation/penalty"][-1]
        trainer.args.decorrelation_coef = 0.0
        dpo_only = trainer.compute_loss(trainer.model, batch).item()
        trainer.args.decorrelation_coef = 0.7
    assert penalty > 0
    assert with_penalty == pytest.approx(dpo_only + 0.7 * penalty, rel=1e-5, abs=1e-6)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_metrics_logged_in_train_and_eval_per_layer(tmp_path):
    args = decpo_config(tmp_path, decorrelation_layers=[0, -1], eval_strategy="steps", eval_steps=1, max_steps=2)
    trainer = DecPOTrainer(
        model=make_model(),
        args=args,
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(4),
        processing_class=make_tokenizer(),
    )
    trainer.train()
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    eval_logs = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(train_logs) == 2 and len(eval_logs) == 2
    for log, prefix in [(train_logs[0], ""), (eval_logs[0], "eval_")]:
        for key in ("decorrelation/penalty", "decorrelation/layer_0", "decorrelation/layer_3", "rewards/margins"):
            assert prefix + key in log, (prefix + key, sorted(log))
        total = log[prefix + "decorrelation/penalty"]
        assert total == pytest.approx(log[prefix + "decorrelation/layer_0"] + log[prefix + "decorrelation/layer_3"])
        # TRL's `loss` is the optimised total; the DPO loss alone is logged next to it
        dpo_loss = log[prefix + "decorrelation/dpo_loss"]
        assert log[prefix + "loss"] == pytest.approx(dpo_loss + args.decorrelation_coef * total, rel=1e-5)
        assert 0 < dpo_loss < log[prefix + "loss"]
    # eval runs without gradient and is still regularised: eval_loss includes the penalty
    metrics = trainer.evaluate()
    assert metrics["eval_decorrelation/penalty"] > 0


def test_coef_zero_behaves_exactly_like_dpo_trainer(tmp_path):
    base_args = base_kwargs(tmp_path)
    runs = []
    for cls, args in [
        (DPOTrainer, DPOConfig(**{**base_args, "output_dir": str(tmp_path / "dpo"), "max_steps": 3})),
        (
            DecPOTrainer,
            DecPOConfig(
                **{**base_args, "output_dir": str(tmp_path / "d0"), "max_steps": 3, "decorrelation_coef": 0.0}
            ),
        ),
        (DecPOTrainer, DPOConfig(**{**base_args, "output_dir": str(tmp_path / "dc"), "max_steps": 3})),
    ]:
        trainer = cls(model=make_model(), args=args, train_dataset=make_dataset(), processing_class=make_tokenizer())
        trainer.train()
        runs.append(trainer)
    reference = runs[0]
    ref_logs = [
        {k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
        for h in reference.state.log_history
    ]
    for trainer in runs[1:]:
        assert not trainer.decorrelation_enabled and trainer.decorrelation_capture is None
        logs = [
            {k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
            for h in trainer.state.log_history
        ]
        assert logs == ref_logs
        for (name, p), (_, q) in zip(
            reference.model.named_parameters(), trainer.model.named_parameters(), strict=True
        ):
            assert torch.equal(p, q), name
        assert set(trainer.model.model_tags) == {"trl", "dpo"}


# ----------------------------------------------------------------------------------------------------------------------
# Hooks (item 8)
# ----------------------------------------------------------------------------------------------------------------------


def test_hooks_exist_only_inside_compute_loss_and_never_double(tmp_path):
    args = decpo_config(tmp_path, decorrelation_layers=[0, 2], max_steps=2)
    trainer = DecPOTrainer(
        model=make_model(), args=args, train_dataset=make_dataset(), processing_class=make_tokenizer()
    )
    model = trainer.model
    counter = SiteCallCounter(model.model.layers[3].mlp.up_proj, model)  # a module we do not hook
    assert count_decpo_hooks(model) == 0
    trainer.train()
    assert count_decpo_hooks(model) == 0
    trainer.train()  # a second train() on the same trainer
    assert count_decpo_hooks(model) == 0
    assert set(counter.ours) == {2}  # policy forwards saw exactly our two hooks, every time
    assert trainer.decorrelation_capture.stats == {"captured": 8}  # 2 layers x 2 steps x 2 trainings

    trainer.save_model(str(tmp_path / "saved"))
    assert count_decpo_hooks(model) == 0
    reloaded = type(model).from_pretrained(str(tmp_path / "saved"))
    assert count_decpo_hooks(reloaded) == 0


def test_hooks_removed_when_the_forward_raises(tmp_path):
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )
    model = trainer.model

    def explode(module, args, output):
        raise RuntimeError("boom in forward")

    handle = model.model.layers[2].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom in forward"):
        trainer.train()
    handle.remove()
    assert count_decpo_hooks(model) == 0
    # layer 1 was captured once before layer 2 raised; the trainer stays usable, with one set of hooks
    trainer.train()
    assert trainer.decorrelation_capture.stats["captured"] == 1 + 2


# ----------------------------------------------------------------------------------------------------------------------
# Model card and Hub (item 9)
# ----------------------------------------------------------------------------------------------------------------------


def test_model_card_and_push_to_hub(tmp_path, monkeypatch):
    import transformers.trainer

    args = decpo_config(tmp_path, decorrelation_layers=[-1], hub_model_id="me/tiny-decpo")
    trainer = DecPOTrainer(
        model=make_model(), args=args, train_dataset=make_dataset(), processing_class=make_tokenizer()
    )
    trainer.train()
    assert set(trainer.model.model_tags) >= {"trl", "dpo", "decpo"}

    uploads = []

    class FakeApi:
        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploads.append(
                {
                    "repo_id": repo_id,
                    "files": sorted(os.listdir(folder_path)),
                    "card": open(os.path.join(folder_path, "README.md")).read(),
                }
            )

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeApi())
    trainer.hub_model_id = "me/tiny-decpo"  # skip repo creation, which needs the network
    trainer.push_to_hub()
    assert len(uploads) == 1 and uploads[0]["repo_id"] == "me/tiny-decpo"
    assert "model.safetensors" in uploads[0]["files"] and "README.md" in uploads[0]["files"]
    card = uploads[0]["card"]
    front_matter = card.split("---")[1]
    for tag in ("- trl", "- dpo", "- decpo"):
        assert tag in front_matter
    assert "trained with DecPO" in card and "huggingface.co/papers/2406.17969" in card
    assert "@inproceedings{yan2024encourage" in card and "@inproceedings{rafailov2023direct" in card
    assert "## DecPO settings" in card
    assert "| `decorrelation_coef` | `1.0` |" in card and "| `decorrelation_layers` | `[3]` |" in card
    assert "| `decorrelation_site` | `mlp.up_proj:output` |" in card
    assert card.count("## DecPO settings") == 1


def test_one_gather_and_one_host_sync_per_step_for_all_layers(tmp_path, monkeypatch):
    """The penalty of every layer, and whether the DPO loss and each layer's rows were finite, go through one gather of
    a [1, 3 + 2 * layers] tensor (the DPO loss, the total, each layer; the flags) and one `.tolist()` per step."""
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, decorrelation_layers=[0, 1, 2, 3], max_steps=2),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )
    gathered = []
    original = trainer.accelerator.gather
    monkeypatch.setattr(trainer.accelerator, "gather", lambda t: gathered.append(tuple(t.shape)) or original(t))
    calls = []
    real_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        calls.append(tuple(self.shape))
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    trainer.train()
    assert gathered.count((1, 11)) == 2  # one per step: DPO loss, total + 4 layers, then finite flags: loss + 4 layers
    assert calls.count((11,)) == 2  # one host sync per step for all of them


def test_a_second_compute_loss_before_the_backward_is_refused_under_reentrant_checkpointing(tmp_path):
    """Under reentrant checkpointing a loss's penalty gets its gradient in that loss's backward; a second
    `compute_loss` before it would silently drop the first loss's injection, so it is refused."""
    model = make_model()  # the Trainer turns checkpointing on in `train()`: here, on the model itself
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    trainer = DecPOTrainer(
        model=model, args=decpo_config(tmp_path), train_dataset=make_dataset(), processing_class=make_tokenizer()
    )
    trainer.model.train()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    loss = trainer.compute_loss(trainer.model, inputs)
    assert trainer.decorrelation_injection.armed and trainer.decorrelation_capture.without_grad == {1}
    with pytest.raises(RuntimeError, match=r"`compute_loss` ran again before the backward.*layers \[1\]"):
        trainer.compute_loss(trainer.model, inputs)
    assert count_decpo_hooks(trainer.model) == 0 and loss.requires_grad
