"""Token-level activations: every real token of every prompt, in order, equal to the site's output in an unpadded
forward pass of each prompt alone."""

import pytest
import torch

from tests.helpers import make_model, make_tokenizer
from trl_decpo.monosemanticity.tokens import token_activations


PROMPTS = ["the cat sat on the mat", "a dog", "i think you are very good today", "yes"]


def test_every_real_token_in_prompt_order_as_an_unpadded_forward_gives_it():
    model, tokenizer = make_model(), make_tokenizer()
    captured = token_activations(model, PROMPTS, tokenizer, layers=[1, 3], batch_size=3)
    assert sorted(captured) == [1, 3]
    expected = {1: [], 3: []}
    hooks = [
        model.model.layers[layer].mlp.up_proj.register_forward_hook(
            lambda module, args, out, layer=layer: expected[layer].append(out[0].detach())
        )
        for layer in (1, 3)
    ]
    with torch.no_grad():
        for prompt in PROMPTS:  # one prompt at a time: no padding at all
            model(**tokenizer(prompt, return_tensors="pt"))
    for hook in hooks:
        hook.remove()
    for layer in (1, 3):
        reference = torch.cat(expected[layer])
        assert captured[layer].shape == reference.shape and captured[layer].dtype == torch.float32
        torch.testing.assert_close(captured[layer], reference, atol=1e-5, rtol=1e-5)
    model.train()
    first = token_activations(model, PROMPTS, tokenizer, layers=[1], max_rows=5)[1]  # fewer prompts run, other padding
    torch.testing.assert_close(first, captured[1][:5], atol=1e-5, rtol=1e-5)
    assert model.training  # put back in training mode after the eval-mode capture


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="max_rows"):
        token_activations(make_model(), PROMPTS, make_tokenizer(), max_rows=0)


def test_content_only_leaves_out_what_every_chat_probe_shares_and_max_rows_runs_only_the_prompts_needed():
    from tests.helpers import CHAT_TEMPLATE
    from trl_decpo.monosemanticity.probes import prepare_probes
    from trl_decpo.monosemanticity.tokens import content_spans

    model, tokenizer = make_model(), make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    chats = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
    probes = prepare_probes(chats, tokenizer, None, "auto")
    spans = content_spans(probes)
    prefix = min(start for start, _ in spans)
    assert all(start == prefix > 0 for start, _ in spans)  # the template's opening, shared by every probe
    assert all(ids[:prefix] == probes.token_ids[0][:prefix] for ids in probes.token_ids)
    assert all(
        len(ids) - end == trailing
        for ids, (_, end), trailing in zip(probes.token_ids, spans, probes.trailing, strict=True)
    )
    every = token_activations(model, chats, tokenizer, layers=[1])[1]
    content = token_activations(model, chats, tokenizer, layers=[1], content_only=True)[1]
    offsets = torch.tensor([0] + [len(ids) for ids in probes.token_ids[:-1]]).cumsum(0).tolist()
    kept = torch.cat([torch.arange(start, end) + offset for (start, end), offset in zip(spans, offsets, strict=True)])
    torch.testing.assert_close(content, every[kept])
    forwards = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: forwards.append(out.shape[0]))
    first = token_activations(model, chats, tokenizer, layers=[1], content_only=True, max_rows=2, batch_size=1)[1]
    hook.remove()
    assert len(first) == 2 and len(forwards) == 1  # the first prompt has at least 2 content tokens: one forward
    torch.testing.assert_close(first, content[:2])
