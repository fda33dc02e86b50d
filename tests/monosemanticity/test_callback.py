"""MonosemanticityCallback on tiny DPO and DecPO runs: keys in log_history, JSON history, plot, no hooks left."""

import json
import os

import pytest
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

from tests.helpers import base_kwargs, decpo_config, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOTrainer, MonosemanticityCallback, measure_monosemanticity
from trl_decpo.capture import count_decpo_hooks


EVAL_KW = dict(eval_strategy="steps", eval_steps=1)


def monosemanticity_logs(trainer):
    return [h for h in trainer.state.log_history if any(k.startswith("eval_monosemanticity/") for k in h)]


def plain_dpo_trainer(tmp_path):
    """A plain DPOTrainer without an eval dataset (the callback then needs `probes`)."""
    return DPOTrainer(
        model=make_model(),
        args=DPOConfig(**base_kwargs(tmp_path)),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )


def run(trainer, **callback_kwargs):
    callback = MonosemanticityCallback(trainer, **callback_kwargs)
    trainer.add_callback(callback)
    trainer.train()
    return callback


@pytest.mark.parametrize("kind", ["dpo", "decpo"])
def test_keys_reach_log_history_and_json(tmp_path, kind):
    if kind == "dpo":
        trainer = DPOTrainer(
            model=make_model(),
            args=DPOConfig(**base_kwargs(tmp_path), **EVAL_KW),
            train_dataset=make_dataset(),
            eval_dataset=make_dataset(6),
            processing_class=make_tokenizer(),
        )
    else:
        trainer = DecPOTrainer(
            model=make_model(),
            args=decpo_config(tmp_path, decorrelation_layers=[1], **EVAL_KW),
            train_dataset=make_dataset(),
            eval_dataset=make_dataset(6),
            processing_class=make_tokenizer(),
        )
    callback = run(trainer)
    logs = monosemanticity_logs(trainer)
    assert [h["step"] for h in logs] == [0, 1, 2]  # before training, then at each evaluation
    for h in logs:
        for metric in ("fd", "control", "participation_ratio", "sparsity"):
            per_layer = [h[f"eval_monosemanticity/{metric}/layer_{i}"] for i in range(4)]
            assert h[f"eval_monosemanticity/{metric}/mean"] == pytest.approx(sum(per_layer) / 4)
            if kind == "decpo":
                assert h[f"eval_monosemanticity/{metric}/hooked"] == h[f"eval_monosemanticity/{metric}/layer_1"]
            else:
                assert f"eval_monosemanticity/{metric}/hooked" not in h
    out = trainer.args.output_dir
    history = json.load(open(os.path.join(out, "monosemanticity.json")))
    assert [r["step"] for r in history] == [0, 1, 2]
    for record, h in zip(history, logs, strict=False):
        for metric in ("fd", "control"):
            logged = [h[f"eval_monosemanticity/{metric}/layer_{i}"] for i in range(4)]
            assert [e[metric] for e in record["layers"]] == logged
        assert record["pooling"] == "last"
    with open(os.path.join(out, "monosemanticity_by_step.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(os.path.join(out, "monosemanticity_by_step.png")) > 5000
    assert count_decpo_hooks(trainer.model) == 0
    # The last logged values are those of the trained model on the eval prompts (independent measurement).
    final = measure_monosemanticity(trainer.model, trainer.eval_dataset["prompt_ids"], make_tokenizer())
    assert logs[-1]["eval_monosemanticity/fd/layer_3"] == pytest.approx(final.fd[3], abs=1e-6)
    assert logs[0]["eval_monosemanticity/fd/layer_3"] != pytest.approx(final.fd[3], abs=1e-6)  # training moved it
    assert logs[-1]["eval_monosemanticity/control/layer_3"] == pytest.approx(final.control[3], abs=1e-6)
    card = callback.card_section()
    assert "| control, step 0 | control, step 2 |" in card
    assert f"{history[-1]['layers'][3]['control']:.4f} |" in card.split("\n| 3")[1].split("\n")[0]


def test_without_evaluations_it_measures_the_model_before_the_first_and_after_the_last_step(tmp_path):
    """The README's snippet (eval_strategy "no"): two measurements, of two different models, at steps 0 and 2."""
    probes = ["the cat sat on", "a dog ran fast", "i think you are very good", "is the cat happy", "they said"]
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, decorrelation_layers=[1]),
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(4),
        processing_class=make_tokenizer(),
    )
    assert trainer.args.eval_strategy == "no"
    run(trainer, probes=probes, plot=False)
    first, last = monosemanticity_logs(trainer)
    assert (first["step"], last["step"]) == (0, 2)
    before = measure_monosemanticity(make_model(), probes, make_tokenizer())
    after = measure_monosemanticity(trainer.model, probes, make_tokenizer())
    for log, report in ((first, before), (last, after)):
        logged = [log[f"eval_monosemanticity/fd/layer_{i}"] for i in range(4)]
        assert logged == pytest.approx([report.fd[i] for i in range(4)], abs=1e-6)
    assert first["eval_monosemanticity/fd/mean"] != pytest.approx(last["eval_monosemanticity/fd/mean"], abs=1e-4)


def test_peft_policy_is_measured_with_its_adapter(tmp_path):
    """Before any step a fresh LoRA adapter is a no-op: step 0 equals the base model; later steps differ."""
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, learning_rate=0.05, **EVAL_KW),
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(6),
        processing_class=make_tokenizer(),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "up_proj"]),
    )
    run(trainer, layers=[0, 2])
    logs = monosemanticity_logs(trainer)
    base = measure_monosemanticity(make_model(), trainer.eval_dataset["prompt_ids"], make_tokenizer(), layers=[0, 2])
    assert logs[0]["eval_monosemanticity/fd/layer_2"] == pytest.approx(base.fd[2], abs=1e-6)
    assert "eval_monosemanticity/fd/layer_1" not in logs[0]
    assert logs[-1]["eval_monosemanticity/fd/layer_2"] != pytest.approx(base.fd[2], abs=1e-6)
    assert count_decpo_hooks(trainer.model) == 0


def test_measure_steps_leave_the_training_metrics_to_the_trainer(tmp_path):
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, max_steps=3),
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(4),
        processing_class=make_tokenizer(),
    )
    callback = run(trainer, measure_steps=2, plot=False)
    assert [r["step"] for r in callback.history] == [0, 2, 3]  # begin, every 2 steps, end (step 3 not yet measured)
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2, 3]
    assert all("rewards/accuracies" in h and "decorrelation/penalty" in h for h in train_logs)
    for h in monosemanticity_logs(trainer):
        assert not any(k.startswith(("rewards/", "decorrelation/", "eval_rewards")) for k in h)


def test_training_again_starts_a_new_history(tmp_path):
    trainer = DPOTrainer(
        model=make_model(),
        args=DPOConfig(**base_kwargs(tmp_path), **EVAL_KW),
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(4),
        processing_class=make_tokenizer(),
    )
    callback = run(trainer, plot=False)
    trainer.train()
    assert [r["step"] for r in callback.history] == [0, 1, 2]
    saved = json.load(open(os.path.join(trainer.args.output_dir, "monosemanticity.json")))
    assert [r["step"] for r in saved] == [0, 1, 2]


def test_resume_continues_the_history_only_when_it_measured_the_same_layers(tmp_path):
    def trainer_with(layers, resume_steps):
        args = DPOConfig(
            **{**base_kwargs(tmp_path), "max_steps": resume_steps, "save_strategy": "steps", "save_steps": 2}
        )
        trainer = DPOTrainer(
            model=make_model(),
            args=args,
            train_dataset=make_dataset(),
            eval_dataset=make_dataset(4),
            processing_class=make_tokenizer(),
        )
        callback = MonosemanticityCallback(trainer, layers=layers, plot=False)
        trainer.add_callback(callback)
        return trainer, callback

    trainer, callback = trainer_with([0, 1], 2)
    trainer.train()
    assert [r["step"] for r in callback.history] == [0, 2]
    trainer, callback = trainer_with([0, 1], 4)
    trainer.train(resume_from_checkpoint=True)
    assert [r["step"] for r in callback.history] == [0, 2, 4]  # continued
    trainer, callback = trainer_with([2], 6)
    trainer.train(resume_from_checkpoint=True)  # other layers: a fresh history, and the card still renders
    assert [r["step"] for r in callback.history] == [6]
    assert "| 2 | " in callback.card_section()


def test_probes_given_and_several_eval_sets_measured_once_per_step(tmp_path):
    trainer = DPOTrainer(
        model=make_model(),
        args=DPOConfig(**base_kwargs(tmp_path), **EVAL_KW),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
        eval_dataset={"a": make_dataset(4), "b": make_dataset(6)},
    )
    callback = run(
        trainer, probes=["the cat sat", "a dog ran fast", "yes i agree"], measure_on_train_begin=False, plot=False
    )
    logs = monosemanticity_logs(trainer)
    assert [h["step"] for h in logs] == [1, 2]
    assert callback.history[0]["num_prompts"] == 3
    assert not os.path.exists(os.path.join(trainer.args.output_dir, "monosemanticity_by_step.png"))


def test_callback_errors(tmp_path):
    trainer = plain_dpo_trainer(tmp_path)
    with pytest.raises(ValueError, match="no eval_dataset; pass `probes`"):
        MonosemanticityCallback(trainer)
    with pytest.raises(ValueError, match=r"`layers` entry 9 is out of range"):
        MonosemanticityCallback(trainer, probes=["a", "b"], layers=[9])
    with pytest.raises(ValueError, match="`site` 'mlp.nothing' matches no module"):
        MonosemanticityCallback(trainer, probes=["a", "b"], site="mlp.nothing")
    with pytest.raises(ValueError, match="at least 2 probe prompts"):
        MonosemanticityCallback(trainer, probes=["a"])
    with pytest.raises(ValueError, match="`measure_steps` must be an integer >= 1 or None, got 0"):
        MonosemanticityCallback(trainer, probes=["a", "b"], measure_steps=0)
    with pytest.raises(ValueError, match="needs the trainer"):
        MonosemanticityCallback(None)


PROBES = ["the cat sat on the mat", "a dog ran fast", "yes i agree", "is the cat happy", "i think you are good", "no"]


def test_labels_and_an_sae_are_logged_at_each_measurement(tmp_path, monkeypatch):
    """Sparse probing of each measured layer, and one SAE trained at step 0 (before training) that scores every later
    measurement; a resumed run would load that SAE from the output folder."""
    from tests.helpers import IdentitySAE, identity_sae
    from trl_decpo.independent import SAESettings, sae_report, sparse_probing
    from trl_decpo.monosemanticity.tokens import token_activations

    trained = identity_sae(monkeypatch)
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, decorrelation_layers=[1], **EVAL_KW),
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(6),
        processing_class=make_tokenizer(),
    )
    labels = [0, 1, 0, 1, 0, 1]
    callback = run(trainer, probes=PROBES, labels=labels, probing_ks=(1,), sae=SAESettings(layer=2, max_rows=30))
    logs = monosemanticity_logs(trainer)
    assert [h["step"] for h in logs] == [0, 1, 2] and len(trained) == 1  # the SAE: trained once, at step 0
    report = measure_monosemanticity(trainer.model, PROBES, make_tokenizer())
    for layer in range(4):
        expected = sparse_probing(report.rows(layer), labels, ks=(1,))
        assert logs[-1][f"eval_monosemanticity/probe_k1/layer_{layer}"] == pytest.approx(expected.accuracy[1])
        assert logs[-1][f"eval_monosemanticity/probe_dense/layer_{layer}"] == pytest.approx(expected.accuracy[None])
    assert logs[-1]["eval_monosemanticity/probe_k1/hooked"] == logs[-1]["eval_monosemanticity/probe_k1/layer_1"]
    tokens = token_activations(trainer.model, PROBES, make_tokenizer(), layers=[2], max_rows=30)[2]
    final = sae_report(IdentitySAE(tokens), tokens)
    assert logs[-1]["eval_monosemanticity/sae_l0"] == pytest.approx(final.l0)
    assert logs[-1]["eval_monosemanticity/sae_neuron_features"] == pytest.approx(final.mean_neuron_features)
    assert callback.history[-1]["sae"]["layer"] == 2 and set(callback.history[-1]["sparse_probing"]) == set("0123")


def test_labels_from_a_probe_dataset_column_follow_the_prompts_kept(tmp_path):
    from datasets import Dataset

    from trl_decpo.independent import SAESettings

    trainer = plain_dpo_trainer(tmp_path)
    probes = Dataset.from_dict({"prompt": [*PROBES, PROBES[0]], "topic": ["a", "b", "a", "b", "a", "b", "x"]})
    callback = MonosemanticityCallback(trainer, probes=probes, labels="topic", max_samples=5)
    assert callback.labels == ["a", "b", "a", "b", "a"]  # the repeated prompt (and its label) counted once
    with pytest.raises(ValueError, match="`labels` 'nope' is not a column of the probes"):
        MonosemanticityCallback(trainer, probes=probes, labels="nope")
    with pytest.raises(ValueError, match="`labels` has 2 entries for 6 probe prompts"):
        MonosemanticityCallback(trainer, probes=PROBES, labels=[0, 1])
    with pytest.raises(ValueError, match="`sae` must be an SAESettings"):
        MonosemanticityCallback(trainer, probes=PROBES, sae=4)
    with pytest.raises(ValueError, match=r"the SAE's `layer` 9: `layers` entry 9 is out of range"):
        MonosemanticityCallback(trainer, probes=PROBES, sae=SAESettings(layer=9))


def test_the_sae_of_step_0_is_saved_and_a_resumed_run_scores_with_it(tmp_path, monkeypatch):
    """A real (tiny) SAE: trained at step 0 and saved in the output folder; a resumed run loads it instead of training
    one on the trained model; a new run (step 0) trains again even if an earlier run left one there."""
    pytest.importorskip("sae_lens")
    from types import SimpleNamespace

    import torch

    from trl_decpo.independent import SAESettings

    trainer = plain_dpo_trainer(tmp_path)
    settings = SAESettings(layer=1, num_features=16, k=2, steps=5, batch_size=8)
    callback = MonosemanticityCallback(trainer, probes=PROBES, sae=settings)
    args = trainer.args
    tokens = torch.randn(40, 128)
    first = callback._sae(args, SimpleNamespace(global_step=0), tokens)
    saved = os.path.join(args.output_dir, "monosemanticity_sae")
    assert os.path.isfile(os.path.join(saved, "cfg.json"))
    monkeypatch.setattr(SAESettings, "train", lambda self, rows: pytest.fail("trained again on resume"))
    resumed = MonosemanticityCallback(trainer, probes=PROBES, sae=settings)._sae(
        args, SimpleNamespace(global_step=3), tokens
    )
    assert torch.equal(resumed.W_dec, first.W_dec)
    trained = []
    monkeypatch.setattr(SAESettings, "train", lambda self, rows: trained.append(self.output_dir) or first)
    MonosemanticityCallback(trainer, probes=PROBES, sae=settings)._sae(args, SimpleNamespace(global_step=0), tokens)
    assert trained == [saved]  # a new run trains its own, into the same folder
