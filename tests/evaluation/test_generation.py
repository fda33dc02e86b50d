"""trl_decpo.evaluation.generation: batched, left-padded completions equal one-prompt-at-a-time `model.generate`."""

import pytest
import torch

from tests.helpers import CHAT_TEMPLATE, make_model, make_tokenizer
from trl_decpo.evaluation import generate_completions


PROMPTS = ["the cat sat on", "i", "do you agree that the answer is good", "we know", "a question because so"]


def one_at_a_time(model, tokenizer, ids, **kwargs):
    """The prompt alone, no padding, no attention mask: new tokens decoded without special tokens."""
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), pad_token_id=tokenizer.pad_token_id, **kwargs)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_greedy_is_one_prompt_at_a_time(arch, tokenizer):
    model = make_model(arch)
    ours = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3)
    expected = [
        one_at_a_time(model, tokenizer, tokenizer(p)["input_ids"], max_new_tokens=12, do_sample=False) for p in PROMPTS
    ]
    assert ours == expected
    assert len({len(p.split()) for p in PROMPTS}) > 1  # the batches are padded


def test_chat_prompts_go_through_the_template_with_the_generation_prompt():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    model = make_model()
    messages = [[{"role": "user", "content": p}] for p in PROMPTS[:3]]
    ours = generate_completions(model, tokenizer, messages, max_new_tokens=6, batch_size=2)
    expected = []
    for p in PROMPTS[:3]:
        ids = tokenizer(f"question {p} answer")["input_ids"]  # CHAT_TEMPLATE's rendering, generation prompt included
        expected.append(one_at_a_time(model, tokenizer, ids, max_new_tokens=6, do_sample=False))
    assert ours == expected


def test_completions_stop_at_eos_and_skip_special_tokens(tokenizer):
    """A model that prefers EOS after one token: completions are one word; the EOS and the padding after it are not
    decoded."""
    model = make_model()
    eos = tokenizer.eos_token_id

    calls = []

    def after_first_token(module, args, logits):  # the first generate step (prefill) picks a word, then EOS wins
        if calls:
            logits[..., eos] += 1e4
        calls.append(1)
        return logits

    handle = model.lm_head.register_forward_hook(after_first_token)
    try:
        completions = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=8)
    finally:
        handle.remove()
    assert len(calls) == 2  # one batch: prefill, then one step that ends every row
    first_tokens = []
    for p in PROMPTS:  # each prompt's greedy next token, by hand
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokenizer(p)["input_ids"]])).logits[0, -1]
        first_tokens.append(tokenizer.decode([int(logits.argmax())], skip_special_tokens=True))
    assert completions == first_tokens
    assert sum(c != "" for c in completions) >= 3


def test_sampling_is_reproducible_with_a_seed(tokenizer):
    model = make_model()
    kwargs = dict(max_new_tokens=10, batch_size=2, do_sample=True, seed=3)
    first = generate_completions(model, tokenizer, PROMPTS, **kwargs)
    assert first == generate_completions(model, tokenizer, PROMPTS, **kwargs)
    greedy = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=2)
    assert first != greedy  # a random tiny model is far from peaked: 5 sampled completions all greedy is unlikely


def test_bad_arguments(tokenizer):
    model = make_model()
    with pytest.raises(ValueError, match="`max_new_tokens` must be a positive integer"):
        generate_completions(model, tokenizer, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        generate_completions(model, tokenizer, PROMPTS, do_sample=True, temperature=0)


def test_chat_prompts_need_a_chat_template(tokenizer):
    with pytest.raises(ValueError, match="conversational prompts .* need the tokenizer's chat template"):
        generate_completions(make_model(), tokenizer, [[{"role": "user", "content": "the cat"}]])
