"""trl_decpo.evaluation.preference: DPOTrainer's eval batches, completion log-probabilities and implicit rewards."""

import contextlib
import importlib

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

from tests.helpers import CHAT_TEMPLATE, PAIRS, base_kwargs, make_dataset, make_model, make_tokenizer
from trl_decpo.evaluation import (
    PairLogps,
    batch_logps,
    dpo_pair_rewards,
    length_shortcut,
    preference_batches,
    preference_logps,
    tokenize_pairs,
)


# the prompt alone ends on "so", the full conversation does not: TRL starts the completion where they diverge
DIVERGENT_TEMPLATE = CHAT_TEMPLATE.replace("{% if add_generation_prompt %}answer {% endif %}", "") + (
    "{% if add_generation_prompt %}answer so {% endif %}"
)


def conversational_dataset(n=8):
    rows = [PAIRS[i % len(PAIRS)] for i in range(n)]
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p, _, _ in rows],
            "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in rows],
            "rejected": [[{"role": "assistant", "content": r}] for _, _, r in rows],
        }
    )


def bos_tokenizer():
    """The tiny tokenizer with a BOS token added in front of every text (as Llama's does): `<unk>` plays BOS."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = make_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<unk> $A", pair="<unk> $A $B", special_tokens=[("<unk>", 2)]
    )
    return tokenizer


# a chat template with a keyword argument of its own: `lead=True` puts "so" in front of every message
LEAD_TEMPLATE = CHAT_TEMPLATE.replace("{% for m in messages %}", "{% for m in messages %}{% if lead %}so {% endif %}")


def data_and_tokenizer(kind):
    tokenizer = bos_tokenizer() if kind == "bos" else make_tokenizer()
    if kind in ("chat", "divergent_chat"):
        tokenizer.chat_template = CHAT_TEMPLATE if kind == "chat" else DIVERGENT_TEMPLATE
        return conversational_dataset(), tokenizer
    if kind == "implicit_chat_kwargs":  # no prompt column (TRL extracts it) and a chat_template_kwargs column
        tokenizer.chat_template = LEAD_TEMPLATE
        data = conversational_dataset()
        return Dataset.from_dict(
            {
                "chosen": [p + c for p, c in zip(data["prompt"], data["chosen"], strict=True)],
                "rejected": [p + r for p, r in zip(data["prompt"], data["rejected"], strict=True)],
                "chat_template_kwargs": [{"lead": True}] * len(data),
            }
        ), tokenizer
    if kind == "implicit_prompt":
        data = make_dataset(8)
        return Dataset.from_dict(
            {
                "chosen": [p + c for p, c in zip(data["prompt"], data["chosen"], strict=True)],
                "rejected": [p + r for p, r in zip(data["prompt"], data["rejected"], strict=True)],
            }
        ), tokenizer
    return make_dataset(8), tokenizer


def dpo_trainer(tmp_path, data, tokenizer, **config):
    args = DPOConfig(**{**base_kwargs(tmp_path), "per_device_eval_batch_size": 4, **config})
    return DPOTrainer(model=make_model(), args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)


@pytest.mark.parametrize("kind", ["text", "bos", "chat", "divergent_chat", "implicit_prompt", "implicit_chat_kwargs"])
def test_batches_are_dpo_trainers_eval_batches(tmp_path, kind):
    """The batches must be those of DPOTrainer's eval dataloader, or the rewards would not be `trainer.evaluate()`'s.
    research.heldout.heldout_batches (research scripts) delegates to the library and gives the same batches."""
    heldout = importlib.import_module("research.heldout")
    data, tokenizer = data_and_tokenizer(kind)
    theirs = list(dpo_trainer(tmp_path, data, tokenizer).get_eval_dataloader())
    ours = list(preference_batches(tokenizer, data, 4))
    research = list(heldout.heldout_batches(tokenizer, data, 4))
    assert len(ours) == len(theirs) == len(research) == 2
    for batch, theirs_batch, (ids, attention, completion, prompt_lens) in zip(ours, theirs, research, strict=True):
        for key in ("input_ids", "attention_mask", "completion_mask"):
            assert torch.equal(batch[key], theirs_batch[key]), key
        assert torch.equal(ids, theirs_batch["input_ids"]) and torch.equal(completion, theirs_batch["completion_mask"])
        assert torch.equal(attention, theirs_batch["attention_mask"])
        # the prompt length of a row is where its completion starts
        first = theirs_batch["completion_mask"].float().argmax(1)
        assert torch.equal(prompt_lens, first) and torch.equal(batch["prompt_lengths"], first[: len(first) // 2])
    so = tokenizer.convert_tokens_to_ids("so")
    if kind == "divergent_chat":  # the "so" of the generation prompt is not part of the sequences
        assert all(int((b["input_ids"] == so).sum()) == 0 for b in theirs)
    if kind == "implicit_chat_kwargs":  # the extracted pairs keep their chat_template_kwargs: "so" before each message
        assert all(bool((b["input_ids"] == so).any(1).all()) for b in theirs)


@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_truncation_and_dropped_pairs_are_dpo_trainers(tmp_path, mode):
    """With `max_length`, sequences are cut as the collator cuts them; under keep_start, DPOTrainer drops the pairs
    whose prompt fills `max_length`, and so do we (`pair_index` says which are left)."""
    data, tokenizer = make_dataset(8), make_tokenizer()
    max_length = 5
    # TRL deprecates keep_end (and says so); until it is gone, DPOTrainer still truncates with it and so do we
    deprecated = pytest.warns(FutureWarning, match="keep_end") if mode == "keep_end" else contextlib.nullcontext()
    with deprecated:
        trainer = dpo_trainer(tmp_path, data, tokenizer, max_length=max_length, truncation_mode=mode)
    theirs = list(trainer.get_eval_dataloader())
    ours = list(preference_batches(tokenizer, data, 4, max_length=max_length, truncation_mode=mode))
    assert len(ours) == len(theirs)
    for batch, theirs_batch in zip(ours, theirs, strict=True):
        for key in ("input_ids", "attention_mask", "completion_mask"):
            assert torch.equal(batch[key], theirs_batch[key]), key
    kept = torch.cat([b["pair_index"] for b in ours]).tolist()
    prompt_words = [len(p.split()) for p in data["prompt"]]
    expected = [i for i, n in enumerate(prompt_words) if n < max_length] if mode == "keep_start" else list(range(8))
    assert kept == expected and (mode == "keep_end" or len(kept) < 8)


def brute_logps(model, tokenizer, prompt, completion):
    """log p(completion tokens + EOS | prompt) from one unpadded forward with all the logits, token by token."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    assert full[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
    return sum(float(logits[t - 1].log_softmax(-1)[full[t]]) for t in range(len(prompt_ids), len(full)))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logps_are_brute_force_sums(arch, tokenizer, dataset):
    model = make_model(arch)
    logps = preference_logps(model, tokenizer, dataset, batch_size=3)
    assert logps.pair_index.tolist() == list(range(len(dataset)))
    for i, row in enumerate(dataset):
        assert float(logps.chosen[i]) == pytest.approx(
            brute_logps(model, tokenizer, row["prompt"], row["chosen"]), abs=1e-4
        )
        assert float(logps.rejected[i]) == pytest.approx(
            brute_logps(model, tokenizer, row["prompt"], row["rejected"]), abs=1e-4
        )


def test_batch_logps_keeps_the_callers_grad_mode(tokenizer, dataset):
    model = make_model()
    batch = next(preference_batches(tokenizer, dataset, 2))
    chosen, rejected = batch_logps(model, batch)
    assert chosen.requires_grad and chosen.shape == rejected.shape == (2,)


def evaluate_metrics(trainer):
    metrics = trainer.evaluate()
    return {k[len("eval_") :]: v for k, v in metrics.items()}


def assert_rewards_match(rewards, metrics):
    assert rewards.accuracy == pytest.approx(metrics["rewards/accuracies"], abs=1e-6)
    assert rewards.margin == pytest.approx(metrics["rewards/margins"], abs=1e-5)
    assert float(rewards.chosen.mean()) == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert float(rewards.rejected.mean()) == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    assert 0 < rewards.accuracy < 1 and rewards.margin != 0  # not a degenerate case


@pytest.mark.parametrize("kind", ["text", "chat"])
def test_rewards_are_dpo_trainers_evaluate_with_a_ref_model(tmp_path, kind):
    """Accuracy and margin per pair, averaged, equal `trainer.evaluate()`'s `eval_rewards/*` (equal batches, so the
    mean of the batch means is the mean): policy and reference are different random models."""
    data, tokenizer = data_and_tokenizer(kind)
    args = DPOConfig(**{**base_kwargs(tmp_path), "per_device_eval_batch_size": 4, "beta": 0.3})
    trainer = DPOTrainer(
        model=make_model(seed=0),
        ref_model=make_model(seed=1),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    metrics = evaluate_metrics(trainer)
    policy, reference = make_model(seed=0), make_model(seed=1)
    rewards = dpo_pair_rewards(
        preference_logps(policy, tokenizer, data, batch_size=3), preference_logps(reference, tokenizer, data), 0.3
    )
    assert_rewards_match(rewards, metrics)
    assert torch.equal(rewards.correct, (rewards.chosen > rewards.rejected).double())
    assert torch.allclose(rewards.margins, rewards.chosen - rewards.rejected)


def test_rewards_are_dpo_trainers_evaluate_with_a_peft_adapter(tmp_path, tokenizer, dataset):
    """A new PEFT adapter (random, so that rewards are not 0): DPOTrainer's reference is the adapter disabled."""
    torch.manual_seed(0)
    peft_config = LoraConfig(r=4, target_modules=["up_proj", "down_proj"], init_lora_weights=False)
    args = DPOConfig(**{**base_kwargs(tmp_path), "per_device_eval_batch_size": 4})
    trainer = DPOTrainer(
        model=make_model(),
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    metrics = evaluate_metrics(trainer)
    policy = trainer.model
    logps = preference_logps(policy, tokenizer, dataset)
    with policy.disable_adapter():
        ref_logps = preference_logps(policy, tokenizer, dataset)
    assert_rewards_match(dpo_pair_rewards(logps, ref_logps, 0.1), metrics)


def test_rewards_need_the_same_pairs():
    a = PairLogps(torch.zeros(3), torch.zeros(3), torch.arange(3))
    b = PairLogps(torch.zeros(3), torch.zeros(3), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="not of the same pairs"):
        dpo_pair_rewards(a, b, 0.1)
    rewards = dpo_pair_rewards(a, a, 0.1)
    assert rewards.accuracy == 0.0 and rewards.margin == 0.0  # ties are not correct, as TRL counts


def test_length_shortcut_counts_words(tokenizer, dataset):
    """The word-level tokenizer: completion tokens = words + EOS."""
    shortcut = length_shortcut(tokenize_pairs(tokenizer, dataset))
    words = [(len(c.split()), len(r.split())) for c, r in zip(dataset["chosen"], dataset["rejected"], strict=True)]
    assert shortcut["chosen_shorter"] == sum(c < r for c, r in words) / len(words)
    assert shortcut["chosen_longer"] == sum(c > r for c, r in words) / len(words)
    assert length_shortcut(tokenize_pairs(tokenizer, dataset), [1])["chosen_longer"] == 1.0  # "very good" vs "bad"


def test_conversational_pairs_need_a_chat_template(tokenizer):
    with pytest.raises(ValueError, match="conversational pairs .* need the tokenizer's chat template"):
        tokenize_pairs(tokenizer, conversational_dataset(2))


def test_tokenize_pairs_refuses_non_preference_rows(tokenizer):
    with pytest.raises(ValueError, match="'prompt', 'chosen' and 'rejected'"):
        tokenize_pairs(tokenizer, [{"prompt": "a", "completion": "b"}])


def test_mixed_text_and_message_pairs_are_refused(tokenizer):
    """A text prompt with message-list completions (DPOTrainer would fail on it, adding a str to a list)."""
    tokenizer.chat_template = CHAT_TEMPLATE
    pair = {
        "prompt": "a",
        "chosen": [{"role": "assistant", "content": "b"}],
        "rejected": [{"role": "assistant", "content": "c"}],
    }
    with pytest.raises(ValueError, match="all be text or all be lists of messages"):
        tokenize_pairs(tokenizer, [pair])
