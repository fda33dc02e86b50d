"""Resume: a run interrupted after its step-2 checkpoint and resumed with `resume_from_checkpoint`
logs the same loss and penalty at steps 3 and 4 as the uninterrupted run (relative tolerance 1e-5: CPU float32, same
seed, optimizer / scheduler / RNG state restored by `Trainer`), and the resumed trainer hooks each layer exactly once
per policy forward."""

import pytest
from peft import LoraConfig
from transformers import TrainerCallback

from tests.helpers import decpo_config, make_dataset, make_model, make_tokenizer
from trl_decpo import DecPOTrainer
from trl_decpo.capture import count_decpo_hooks


LAYERS = [0, 2]


class Crash(TrainerCallback):
    """Simulates a preempted job: raises when step 3 begins, after checkpoint-2 was written."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt("preempted")


class HookCounter:
    """A test hook on a hooked module: how many trl-decpo hooks the model holds at each call."""

    def __init__(self, module, model):
        self.seen = []
        module.register_forward_hook(lambda *args: self.seen.append(count_decpo_hooks(model)))


def trainer_for(tmp_path, peft):
    args = decpo_config(
        tmp_path,
        decorrelation_layers=LAYERS,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=2,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"], task_type="CAUSAL_LM") if peft else None
    return DecPOTrainer(
        model=make_model(),
        args=args,
        train_dataset=make_dataset(8),
        processing_class=make_tokenizer(),
        peft_config=lora,
    )


def logged(trainer, steps):
    rows = {h["step"]: h for h in trainer.state.log_history if "loss" in h and "decorrelation/penalty" in h}
    return [(rows[s]["loss"], rows[s]["decorrelation/penalty"], rows[s]["decorrelation/layer_2"]) for s in steps]


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_resumed_run_matches_the_uninterrupted_one(tmp_path, peft):
    straight = trainer_for(tmp_path / "straight", peft)
    straight.train()
    want = logged(straight, [3, 4])

    first = trainer_for(tmp_path / "interrupted", peft)
    first.add_callback(Crash())
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert count_decpo_hooks(first.model) == 0  # the interrupted trainer left nothing behind
    checkpoint = tmp_path / "interrupted" / "out" / "checkpoint-2"
    assert checkpoint.is_dir() and not (tmp_path / "interrupted" / "out" / "checkpoint-4").exists()

    resumed = trainer_for(tmp_path / "interrupted", peft)
    model = resumed.model
    counter = HookCounter(resumed.decorrelation_sites[0].module, model)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    got = logged(resumed, [3, 4])
    assert [h["step"] for h in resumed.state.log_history if "loss" in h] == [1, 2, 3, 4]  # 1-2 from the checkpoint
    for (loss, penalty, layer), (loss0, penalty0, layer0) in zip(got, want, strict=True):
        assert loss == pytest.approx(loss0, rel=1e-5)
        assert penalty == pytest.approx(penalty0, rel=1e-5) and layer == pytest.approx(layer0, rel=1e-5)
    # hooks re-registered exactly once: 2 layers x 2 steps captured, and both (only) our hooks present at each call
    assert resumed.decorrelation_capture.stats["captured"] == len(LAYERS) * 2
    assert counter.seen and set(counter.seen) == {len(LAYERS)}
    assert count_decpo_hooks(model) == 0
