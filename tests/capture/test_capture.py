"""Site resolution and pooling."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from tests.helpers import make_model, model_path
from trl_decpo.capture import (
    ActivationCapture,
    Site,
    build_row_index,
    count_decpo_hooks,
    resolve_sites,
    unwrap_model,
)


def expected_default_module(model, arch, layer):
    if arch in ("llama", "mistral", "qwen2"):
        return model.model.layers[layer].mlp.up_proj
    if arch == "gpt2":
        return model.transformer.h[layer].mlp.act
    return model.gpt_neox.layers[layer].mlp.act


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gpt2", "gpt_neox"])
def test_default_site_per_architecture(arch):
    model = make_model(arch, layers=6)
    (site,) = resolve_sites(model, None)
    assert site.layer == 2  # 6 // 3
    assert site.module is expected_default_module(model, arch, 2)
    sites = resolve_sites(model, [0, -1])
    assert [s.layer for s in sites] == [0, 5]
    assert sites[1].module is expected_default_module(model, arch, 5)


def capture_rows(model, sites, input_ids, **masks):
    index = build_row_index(
        "last",
        "both",
        input_ids,
        **{k: v for k, v in masks.items() if k != "position_ids"},
        position_ids=masks.get("position_ids"),
    )
    capture = ActivationCapture(sites)
    with torch.no_grad(), capture.capture(index) as rows:
        model(input_ids=input_ids, use_cache=False, **masks)
    return rows


def test_gpt2_site_is_after_the_nonlinearity():
    model = make_model("gpt2").eval()
    sites = resolve_sites(model, [1])
    ids = torch.tensor([[3, 4, 5, 6]])
    inner = {}
    mlp = model.transformer.h[1].mlp
    handle = mlp.c_fc.register_forward_hook(lambda m, a, o: inner.setdefault("fc", o))
    rows = capture_rows(model, sites, ids)
    handle.remove()
    assert torch.allclose(rows[1], mlp.act(inner["fc"])[0, -1:])


def test_input_site_captures_the_gated_product():
    model = make_model("llama").eval()
    sites = resolve_sites(model, [1], "mlp.down_proj:input")
    assert sites[0].site == Site("mlp.down_proj", capture_input=True)
    mlp = model.model.layers[1].mlp
    seen = {}
    handle = mlp.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    rows = capture_rows(model, sites, ids)
    handle.remove()
    x = seen["x"]
    gated = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    assert torch.allclose(rows[1], gated[0, -1:], atol=1e-6)


def test_peft_lora_site_includes_the_lora_delta():
    model = make_model("llama")
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["up_proj", "q_proj"], init_lora_weights=False)
    ).eval()
    (site,) = resolve_sites(peft_model, [1])
    lora_layer = peft_model.base_model.model.model.layers[1].mlp.up_proj
    assert site.module is lora_layer
    assert site.name == "base_model.model.model.layers.1.mlp.up_proj"
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    seen = {}
    handle = lora_layer.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with_adapter = capture_rows(peft_model, [site], ids)[1]
    handle.remove()
    x = seen["x"][0, -1:]
    base = lora_layer.base_layer(x)
    delta = lora_layer.lora_B["default"](lora_layer.lora_A["default"](x)) * lora_layer.scaling["default"]
    assert delta.abs().max() > 1e-3
    assert torch.allclose(with_adapter, base + delta, atol=1e-5)
    with peft_model.disable_adapter():
        without = capture_rows(peft_model, [site], ids)[1]
    assert not torch.allclose(with_adapter, without, atol=1e-4)


def test_bitsandbytes_4bit_layers_resolve_and_capture():
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model = AutoModelForCausalLM.from_pretrained(
        model_path("llama64"),
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        ),
        dtype=torch.float32,
    )
    (site,) = resolve_sites(model, [1])
    assert isinstance(site.module, bnb.nn.Linear4bit)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["up_proj"], init_lora_weights=False))
    (site,) = resolve_sites(peft_model, [1])
    assert isinstance(site.module.base_layer, bnb.nn.Linear4bit)
    rows = capture_rows(peft_model, [site], torch.tensor([[3, 4, 5, 6]]))
    assert rows[1].shape == (1, 128) and torch.isfinite(rows[1]).all()


def test_data_parallel_wrapper_is_unwrapped():
    model = make_model("llama")
    wrapped = nn.DataParallel(model)  # keeps the model in `.module`, as DDP and DeepSpeed engines do

    assert unwrap_model(wrapped) is model
    (site,) = resolve_sites(wrapped, [2])
    assert site.module is model.model.layers[2].mlp.up_proj


def test_site_that_matches_nothing_lists_what_exists():
    model = make_model("llama")
    with pytest.raises(ValueError) as info:
        resolve_sites(model, None, "mlp.nonexistent")
    message = str(info.value)
    assert "decorrelation_site" in message and "mlp.nonexistent" in message
    assert "mlp.up_proj" in message and "mlp.down_proj" in message  # what exists


@pytest.mark.parametrize("layer", [4, -5, 99])
def test_layer_out_of_range(layer):
    with pytest.raises(ValueError, match=r"decorrelation_layers.*allowed values are -4\.\.3"):
        resolve_sites(make_model("llama"), [layer])


@pytest.mark.parametrize("spec", ["mlp.up_proj:middle", "", "mlp..x", "3mlp"])
def test_bad_site_syntax(spec):
    with pytest.raises(ValueError, match="decorrelation_site"):
        Site.parse(spec)


# ----------------------------------------------------------------------------------------------------------------------
# Pooling: padded and packed batches give the rows of an unpadded reference
# ----------------------------------------------------------------------------------------------------------------------

# [chosen_1, chosen_2, rejected_1, rejected_2]: (prompt ids, completion ids)
SEQUENCES = [
    ([3, 4, 5], [6, 7]),
    ([8, 9], [10, 11, 12, 13]),
    ([3, 4, 5], [14]),
    ([8, 9], [15, 16, 17]),
]


def reference_rows(model, site, pooling, sequences):
    """Each sequence run alone, no padding: its site activations, then the pooling done by hand."""
    selected = {"both": SEQUENCES, "chosen": SEQUENCES[:2], "rejected": SEQUENCES[2:]}[sequences]
    out = []
    for prompt, completion in selected:
        seen = {}
        handle = site.module.register_forward_hook(lambda m, a, o, seen=seen: seen.setdefault("z", o))
        with torch.no_grad():
            model(input_ids=torch.tensor([prompt + completion]), use_cache=False)
        handle.remove()
        z = seen["z"][0]
        if pooling == "last":
            out.append(z[-1:])
        elif pooling == "mean":
            out.append(z[len(prompt) :].mean(0, keepdim=True))
        else:
            out.append(z[len(prompt) :])
    return torch.cat(out)


def padded_batch(side):
    length = max(len(p) + len(c) for p, c in SEQUENCES)
    ids, attention, completion, positions = [], [], [], []
    for prompt, comp in SEQUENCES:
        seq = prompt + comp
        pad = length - len(seq)
        mask = [1] * len(seq)
        cmask = [0] * len(prompt) + [1] * len(comp)
        pos = list(range(len(seq)))
        if side == "right":
            ids.append(seq + [0] * pad), attention.append(mask + [0] * pad), completion.append(cmask + [0] * pad)
            positions.append(pos + [0] * pad)
        else:
            ids.append([0] * pad + seq), attention.append([0] * pad + mask), completion.append([0] * pad + cmask)
            positions.append([1] * pad + pos)
    t = torch.tensor
    return t(ids), dict(attention_mask=t(attention), position_ids=t(positions)), t(completion)


def packed_batch():
    ids, positions, completion = [], [], []
    for prompt, comp in SEQUENCES:
        ids += prompt + comp
        positions += list(range(len(prompt) + len(comp)))
        completion += [0] * len(prompt) + [1] * len(comp)
    return torch.tensor([ids]), dict(position_ids=torch.tensor([positions])), torch.tensor([completion])


@pytest.mark.parametrize("layout", ["right", "left", "packed"])
@pytest.mark.parametrize("pooling", ["last", "mean", "tokens"])
@pytest.mark.parametrize("sequences", ["both", "chosen", "rejected"])
def test_pooling_matches_unpadded_reference(layout, pooling, sequences):
    model = make_model("llama").eval()
    (site,) = resolve_sites(model, [2])
    ids, model_kwargs, completion = packed_batch() if layout == "packed" else padded_batch(layout)
    index = build_row_index(
        pooling,
        sequences,
        ids,
        attention_mask=model_kwargs.get("attention_mask"),
        completion_mask=completion,
        position_ids=model_kwargs.get("position_ids"),
    )
    with torch.no_grad(), ActivationCapture([site]).capture(index) as rows:
        model(input_ids=ids, use_cache=False, **model_kwargs)
    want = reference_rows(model, site, pooling, sequences)
    assert rows[2].shape == want.shape
    assert torch.allclose(rows[2], want, atol=1e-5), (rows[2] - want).abs().max()


def test_tokens_pooling_cap_subsamples_evenly():
    ids, kwargs, completion = padded_batch("right")
    index = build_row_index(
        "tokens", "both", ids, attention_mask=kwargs["attention_mask"], completion_mask=completion, max_rows=4
    )
    full = build_row_index("tokens", "both", ids, attention_mask=kwargs["attention_mask"], completion_mask=completion)
    assert full.token_index.numel() == 10 and index.token_index.numel() == 4
    assert set(index.token_index.tolist()) <= set(full.token_index.tolist())
    assert index.token_index[0] == full.token_index[0] and index.token_index[-1] == full.token_index[-1]


def test_odd_batch_cannot_split_chosen_rejected():
    with pytest.raises(ValueError, match="even number"):
        build_row_index("last", "chosen", torch.ones(3, 4, dtype=torch.long), attention_mask=torch.ones(3, 4))


def test_capture_keeps_first_forward_only_and_removes_hooks_on_error():
    model = make_model("llama").eval()
    sites = resolve_sites(model, [0, 3])
    capture = ActivationCapture(sites)
    ids = torch.tensor([[3, 4, 5]])
    index = build_row_index("last", "both", ids)
    with torch.no_grad(), capture.capture(index) as rows:
        assert count_decpo_hooks(model) == 2
        model(input_ids=ids, use_cache=False)
        first = {k: v.clone() for k, v in rows.items()}
        model(input_ids=torch.tensor([[7, 8, 9]]), use_cache=False)  # ignored
    assert capture.stats == {"captured": 2, "ignored": 2}
    assert all(torch.equal(first[k], rows[k]) for k in rows)
    assert count_decpo_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"), capture.capture(index):
        assert count_decpo_hooks(model) == 2
        raise RuntimeError("boom")
    assert count_decpo_hooks(model) == 0


@pytest.mark.parametrize("pooling", ["last", "mean", "tokens"])
@pytest.mark.parametrize("sequences", ["both", "chosen"])
def test_flattened_activations_pool_like_batched_ones(pooling, sequences):
    """Some models flatten the tokens to [B * T, d] before an MLP projection (OPT's fc1 / fc2, Qwen2-MoE's shared
    expert): pooling those gives the rows the [B, T, d] activations give."""
    torch.manual_seed(0)
    ids = torch.randint(3, 20, (4, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [0] * 2 + [1] * 4, [1] * 5 + [0]])
    completion = torch.zeros_like(mask)
    completion[:, 2:] = mask[:, 2:]
    index = build_row_index(pooling, sequences, ids, mask, completion, max_rows=5 if pooling == "tokens" else None)
    acts = torch.randn(4, 6, 8)
    assert torch.equal(index.pool(acts.reshape(24, 8)), index.pool(acts))
    with pytest.raises(ValueError, match=r"cannot pool activations of shape \(25, 8\)"):
        index.pool(torch.randn(25, 8))
