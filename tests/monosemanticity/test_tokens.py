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
    assert torch.equal(token_activations(model, PROMPTS, tokenizer, layers=[1], max_rows=5)[1], captured[1][:5])
    assert model.training  # put back in training mode after the eval-mode capture


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="max_rows"):
        token_activations(make_model(), PROMPTS, make_tokenizer(), max_rows=0)
