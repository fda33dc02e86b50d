"""Hook hygiene: after train, evaluate, save, push and an exception inside the forward pass, no
trl-decpo hook is left on any module, and DecPO leaves exactly the hooks a plain `DPOTrainer` run leaves (those are
TRL's and transformers', not ours to remove); the trained model deep-copies and pickles; a second `train()` and a
trainer built on a copy capture each layer once per forward."""

import copy
import pickle

import pytest
import torch

from tests.helpers import decpo_config, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOTrainer, MonosemanticityCallback
from trl_decpo.capture import count_decpo_hooks


def inventory(model):
    """Every hook on every module, by kind: ``{(module name, kind): count}`` for the non-empty ones."""
    kinds = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    found = {}
    for name, module in model.named_modules():
        for kind in kinds:
            count = len(getattr(module, kind, {}) or {})
            if count:
                found[(name, kind)] = count
    return found


def build(tmp_path, coef, name, **overrides):
    args = decpo_config(
        tmp_path / name,
        decorrelation_coef=coef,
        decorrelation_layers=[0, 2],
        max_steps=2,
        eval_strategy="steps",
        eval_steps=1,
        **overrides,
    )
    trainer = DecPOTrainer(
        model=make_model(),
        args=args,
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(4),
        processing_class=make_tokenizer(),
    )
    trainer.add_callback(MonosemanticityCallback(trainer, probes=["the cat sat", "a dog ran fast", "yes"], plot=False))
    return trainer


def stages(trainer, tmp_path, monkeypatch):
    """Run train, evaluate, save, push and a failing evaluate; yield the model's hook inventory after each."""
    import transformers.trainer

    trainer.train()
    yield "train", inventory(trainer.model)
    trainer.evaluate()
    yield "evaluate", inventory(trainer.model)
    trainer.save_model(str(tmp_path / "saved"))
    yield "save", inventory(trainer.model)

    class FakeApi:
        def upload_folder(self, **kwargs):
            return None

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeApi())
    trainer.hub_model_id = "me/tiny"
    trainer.push_to_hub()
    yield "push", inventory(trainer.model)

    def explode(module, args, output):
        raise RuntimeError("boom in forward")

    handle = trainer.model.model.layers[1].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom in forward"):
        trainer.evaluate()
    with pytest.raises(RuntimeError, match="boom in forward"):
        trainer.train()
    handle.remove()
    yield "exception", inventory(trainer.model)


def test_no_hook_of_ours_and_none_beyond_dpo_after_every_stage(tmp_path, monkeypatch):
    dpo = build(tmp_path, 0.0, "dpo")
    decpo = build(tmp_path, 1.0, "decpo")
    assert inventory(decpo.model) == inventory(dpo.model)  # construction adds nothing either
    for (stage, theirs), (_, ours) in zip(
        stages(dpo, tmp_path / "a", monkeypatch), stages(decpo, tmp_path / "b", monkeypatch), strict=True
    ):
        assert count_decpo_hooks(decpo.model) == 0, stage
        assert ours == theirs, stage


def test_trained_model_deep_copies_and_pickles(tmp_path):
    trainer = DecPOTrainer(
        model=make_model(),
        args=decpo_config(tmp_path, decorrelation_layers=[1]),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )
    trainer.train()
    model = trainer.model.eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        want = model(ids).logits
    copied = copy.deepcopy(model)
    unpickled = pickle.loads(pickle.dumps(model))
    for other in (copied, unpickled):
        assert count_decpo_hooks(other) == 0 and inventory(other) == inventory(model)
        with torch.no_grad():
            assert torch.equal(other(ids).logits, want)

    # a trainer on the copy hooks the copy, once: 1 layer x 2 steps, and the original stays hook-free
    again = DecPOTrainer(
        model=copied.train(),
        args=decpo_config(tmp_path / "copy", decorrelation_layers=[1]),
        train_dataset=make_dataset(),
        processing_class=make_tokenizer(),
    )
    again.train()
    assert again.decorrelation_capture.stats == {"captured": 2}
    assert count_decpo_hooks(model) == 0 and count_decpo_hooks(copied) == 0
