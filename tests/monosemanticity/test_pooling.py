"""Probe pooling ("last", "mean", "last_content", "auto") against hooks written here, on prompts run one by one."""

import logging

import pytest
import torch

from tests.helpers import base_kwargs, brute_fd, make_dataset, make_model, make_tokenizer
from trl_decpo import MonosemanticityCallback, measure_monosemanticity
from trl_decpo.capture import count_decpo_hooks
from trl_decpo.monosemanticity.probes import generation_suffix, prepare_probes


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "i think you are very good", "yes", "is the cat happy or sad"]

# A chat template whose generation prompt ("the answer is") follows a closing "<eos>": four constant tokens after the
# last message's content, and the prompt alone is a prefix of prompt + completion (as DPOTrainer needs).
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}question {{ m['content'] }} <eos> {% else %}the answer is "
    "{{ m['content'] }} <eos> {% endif %}{% endfor %}{% if add_generation_prompt %}the answer is {% endif %}"
)

CHATS = [[{"role": "user", "content": p}] for p in PROMPTS] + [
    [
        {"role": "user", "content": "do you agree"},
        {"role": "assistant", "content": "yes i agree"},
        {"role": "user", "content": "is the dog good"},
    ]
]


def chat_tokenizer():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def templated(tokenizer, chats):
    return [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        for c in chats
    ]


def last_content_position(tokenizer, ids, chat) -> int:
    """Index of the last token of the last message's content in `ids`: where its content tokens last occur."""
    content = tokenizer(chat[-1]["content"])["input_ids"]
    ends = [k for k in range(len(content) - 1, len(ids)) if ids[k - len(content) + 1 : k + 1] == content]
    return ends[-1]


def rows_alone(model, token_lists, layer, pick):
    """Each prompt run alone (no padding); `pick(acts [T, d], i)` makes its row from the up_proj output."""
    seen = {}
    module = model.model.layers[layer].mlp.up_proj
    handle = module.register_forward_hook(lambda mod, args, out: seen.__setitem__("z", out))
    rows = []
    try:
        with torch.no_grad():
            for i, ids in enumerate(token_lists):
                model(input_ids=torch.tensor([ids]))
                rows.append(pick(seen["z"][0], i))
    finally:
        handle.remove()
    return torch.stack(rows)


def test_mean_pooling_equals_the_mean_over_each_prompts_tokens():
    """Batched with right padding (1 to 6 tokens in one batch), the mean excludes the pad positions."""
    model, tokenizer = make_model(), make_tokenizer()
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(x) for x in ids}) == 3  # 1, 4 and 6 tokens
    report = measure_monosemanticity(model, PROMPTS, tokenizer, layers=[0, 2], pooling="mean", batch_size=5)
    assert report.pooling == "mean"
    for layer in (0, 2):
        expected = rows_alone(model, ids, layer, lambda acts, i: acts.mean(0))
        assert torch.allclose(report.rows(layer), expected, atol=1e-6)
        assert report.fd[layer] == pytest.approx(brute_fd(expected), abs=1e-6)
    last = measure_monosemanticity(model, PROMPTS, tokenizer, layers=[2], pooling="last")
    assert last.fd[2] != pytest.approx(report.fd[2], abs=1e-4)
    assert count_decpo_hooks(model) == 0


def test_last_content_picks_the_last_content_token_of_chat_probes():
    model, tokenizer = make_model(), chat_tokenizer()
    ids = templated(tokenizer, CHATS)
    positions = [last_content_position(tokenizer, x, c) for x, c in zip(ids, CHATS, strict=True)]
    assert all(len(x) - 1 - p == 4 for x, p in zip(ids, positions, strict=True))  # "<eos> the answer is" follows
    report = measure_monosemanticity(model, CHATS, tokenizer, layers=[1, 3], pooling="last_content", batch_size=4)
    auto = measure_monosemanticity(model, CHATS, tokenizer, layers=[1, 3], batch_size=2)
    last = measure_monosemanticity(model, CHATS, tokenizer, layers=[1, 3], pooling="last")
    assert report.pooling == auto.pooling == "last_content" and last.pooling == "last"
    for layer in (1, 3):
        expected = rows_alone(model, ids, layer, lambda acts, i: acts[positions[i]])
        assert torch.allclose(report.rows(layer), expected, atol=1e-6)
        assert torch.allclose(auto.rows(layer), expected, atol=1e-6)
        assert report.fd[layer] == pytest.approx(brute_fd(expected), abs=1e-6)
        at_end = rows_alone(model, ids, layer, lambda acts, i: acts[-1])
        assert torch.allclose(last.rows(layer), at_end, atol=1e-6)
        assert not torch.allclose(at_end, expected, atol=1e-3)
        assert last.fd[layer] != pytest.approx(report.fd[layer], abs=1e-4)


def test_token_id_probes_and_plain_text():
    model, tokenizer = make_model(), chat_tokenizer()
    ids = templated(tokenizer, CHATS)
    chats = measure_monosemanticity(model, CHATS, tokenizer, layers=[2], pooling="last_content")
    as_ids = measure_monosemanticity(model, ids, tokenizer, layers=[2], pooling="last_content")
    assert torch.equal(as_ids.rows(2), chats.rows(2))  # token ids taken as single-user-turn templated prompts
    assert measure_monosemanticity(model, ids, tokenizer, layers=[2]).pooling == "last"  # "auto" on token ids
    # plain text is all content: "last_content" == "last" == the default, which stays "last"
    text = [
        measure_monosemanticity(model, PROMPTS, tokenizer, layers=[2], pooling=p) for p in ("last_content", "auto")
    ]
    assert text[1].pooling == "last"
    assert torch.equal(text[0].rows(2), text[1].rows(2))
    assert generation_suffix(tokenizer) == tokenizer("<eos> the answer is", add_special_tokens=False)["input_ids"]


def test_probes_without_the_generation_suffix(caplog):
    tokenizer = chat_tokenizer()
    plain = [tokenizer(p)["input_ids"] for p in PROMPTS]
    with pytest.raises(ValueError, match=r"`pooling='last_content'`: probe 0 does not end with .*'last' or 'mean'"):
        prepare_probes(plain, tokenizer, pooling="last_content")
    with caplog.at_level(logging.WARNING):  # "auto" falls back to the last token of every probe
        probes = prepare_probes(plain, tokenizer, pooling="auto", chats=CHATS[: len(plain)])
    assert probes.pooling == "last" and "pools every probe at its last token" in caplog.text
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        prepare_probes(templated(tokenizer, CHATS), make_tokenizer(), pooling="last_content")
    shouting = chat_tokenizer()
    shouting.chat_template = TEMPLATE.replace("{{ m['content'] }}", "{{ m['content'] | upper }}")
    with pytest.raises(ValueError, match="does not render the last message's content verbatim"):
        prepare_probes(CHATS, shouting, pooling="last_content")
    with pytest.raises(ValueError, match="all of them in the chat template's generation suffix"):
        prepare_probes(CHATS, tokenizer, pooling="last_content").keep_last(4)


def test_invalid_pooling_fails_before_any_forward(tmp_path):
    model, tokenizer = make_model(), make_tokenizer()
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    message = r"`pooling` must be one of \['auto', 'last', 'last_content', 'mean'\], got 'first'"
    with pytest.raises(ValueError, match=message):
        measure_monosemanticity(model, PROMPTS, tokenizer, pooling="first")
    handle.remove()
    assert forwards == []
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(**base_kwargs(tmp_path)),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=message):
        MonosemanticityCallback(trainer, probes=PROMPTS, pooling="first")


def test_callback_pools_a_chat_eval_dataset_at_its_content(tmp_path):
    """The callback's default probes are the eval dataset's prompt_ids; their chat messages say where content ends."""
    from trl import DPOConfig, DPOTrainer

    tokenizer = chat_tokenizer()
    chat = make_dataset(6).map(
        lambda r: {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
    )
    trainer = DPOTrainer(
        model=make_model(),
        args=DPOConfig(**base_kwargs(tmp_path)),
        train_dataset=chat,
        eval_dataset=chat,
        processing_class=tokenizer,
    )
    auto = MonosemanticityCallback(trainer, layers=[1])
    assert auto.pooling == "last_content" and auto.probes.trailing == [4] * 6
    got = measure_monosemanticity(trainer.model, auto.probes, tokenizer, layers=[1])
    want = measure_monosemanticity(trainer.model, list(chat["prompt"]), tokenizer, layers=[1])
    assert torch.equal(got.rows(1), want.rows(1)) and got.pooling == "last_content"
    assert MonosemanticityCallback(trainer, layers=[1], pooling="last").probes.trailing == [0] * 6
