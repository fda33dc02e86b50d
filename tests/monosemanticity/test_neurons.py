"""Weight proxy and top tokens on tiny models: planted neurons, brute-force medians, PEFT and 4-bit weights."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.helpers import gpt2_with_biases, make_model, make_tokenizer, plant
from trl_decpo import top_tokens, weight_proxy
from trl_decpo.monosemanticity.weights import linear_weight


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "i think you are very good", "yes", "is the cat happy"]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_planted_direction_comes_out_first(arch):
    tokenizer = make_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids("happy")
    model = plant(make_model(arch), arch, layer=2, neuron=7, token_id=token_id)
    result = top_tokens(model, tokenizer, layer=2, k=3, num_tokens=5, prompts=PROMPTS)
    assert len(result) == 3 and len(result[0].tokens) == 5
    assert result[0].dimension == 7
    assert result[0].token_ids[0] == token_id and result[0].tokens[0] == "happy"
    assert result[0].score > result[1].score >= result[2].score
    assert all(r.dimension != 7 for r in result[1:])


def test_ranking_by_weight_change_against_a_base():
    tokenizer = make_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids("dog")
    base = make_model()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.layers[1].mlp.gate_proj.weight[11] += 1.0  # neuron 11: the largest input-weight change
        tuned.model.layers[1].mlp.up_proj.weight[3] += 0.3  # neuron 3: second
        tuned.model.layers[1].mlp.down_proj.weight[:, 11] = tuned.get_output_embeddings().weight[token_id] * 10
        tuned.get_output_embeddings().weight[token_id] *= 4.0
    result = top_tokens(tuned, tokenizer, layer=1, k=2, num_tokens=3, base_model=base)
    assert [r.dimension for r in result] == [11, 3]
    assert result[0].tokens[0] == "dog"
    assert result[0].score == pytest.approx(float(torch.ones(32).norm()), rel=1e-5)


def test_top_tokens_errors():
    model, tokenizer = make_model(), make_tokenizer()
    with pytest.raises(ValueError, match="give exactly one of them"):
        top_tokens(model, tokenizer, layer=1)
    with pytest.raises(ValueError, match=r"`layer` entry 7 is out of range.*-4\.\.3"):
        top_tokens(model, tokenizer, layer=7, prompts=PROMPTS)
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        top_tokens(model, tokenizer, layer=1, k=0, prompts=PROMPTS)
    with pytest.raises(ValueError, match="has 32 dimensions but the output projection"):
        top_tokens(model, tokenizer, layer=1, prompts=PROMPTS, site="post_attention_layernorm")


def test_weight_proxy_brute_force_on_gpt2():
    model = gpt2_with_biases()
    report = weight_proxy(model)

    def med(values):
        values = sorted(values)
        mid = len(values) // 2
        return (values[mid - 1] + values[mid]) / 2 if len(values) % 2 == 0 else values[mid]

    medians, abs_medians = [], []
    for block in model.transformer.h:
        w, b = block.mlp.c_fc.weight.detach().double(), block.mlp.c_fc.bias.detach().double()  # Conv1D: [in, out]
        scores = [float(w[:, j].norm() * b[j]) for j in range(w.shape[1])]
        medians.append(med(scores))
        abs_medians.append(med([abs(x) for x in scores]))
    scale = max(abs_medians)
    assert report.layers == [0, 1, 2, 3]
    assert [report.medians[i] for i in report.layers] == pytest.approx(medians, rel=1e-6)
    assert [report.values[i] for i in report.layers] == pytest.approx([m / scale for m in medians], rel=1e-6)
    assert report.change is None
    subset = weight_proxy(model, layers=[2])  # the scale stays over all layers
    assert subset.layers == [2] and subset.values[2] == pytest.approx(report.values[2])


def test_weight_proxy_change_against_base():
    base = gpt2_with_biases()
    tuned = copy.deepcopy(base)
    changed = [2, 5, 9, 20]
    with torch.no_grad():
        fc = tuned.transformer.h[1].mlp.c_fc
        fc.weight[:, changed] += 2.0
        fc.bias[changed] = fc.bias[changed].abs() + 1.0
    report = weight_proxy(tuned, base, layers=[1, 2], top_k=4)
    b_fc = base.transformer.h[1].mlp.c_fc

    def med(fc_module):
        s = sorted(float(fc_module.weight[:, j].detach().norm() * fc_module.bias[j].detach()) for j in changed)
        return (s[1] + s[2]) / 2

    assert report.change[1] == pytest.approx((med(fc) - med(b_fc)) / abs(med(b_fc)), rel=1e-6)
    assert report.change[2] == 0.0  # layer 2 did not change


def test_weight_proxy_refuses_models_without_input_bias():
    with pytest.raises(ValueError, match=r"needs an MLP input projection with a bias.*`model.layers.0.mlp.up_proj`"):
        weight_proxy(make_model())


@pytest.mark.parametrize(
    "arch,module", [("llama", "model.layers.1.mlp.up_proj"), ("gpt2", "transformer.h.1.mlp.c_fc")]
)
def test_lora_weights_read_as_merged(arch, module):
    target = module.rsplit(".", 1)[1]
    peft = get_peft_model(
        make_model(arch),
        LoraConfig(r=4, target_modules=[target], init_lora_weights=False, fan_in_fan_out=arch == "gpt2"),
    )
    read, _ = linear_weight(peft.base_model.model.get_submodule(module))
    merged = peft.merge_and_unload().get_submodule(module)
    expected = merged.weight.detach().float()
    expected = expected.T if arch == "gpt2" else expected
    assert torch.allclose(read, expected, atol=1e-6)
    assert not torch.allclose(read, linear_weight(make_model(arch).get_submodule(module))[0], atol=1e-4)


@pytest.mark.parametrize("variant", ["dora", "lora_bias", "loha", "modules_to_save"])
def test_other_adapters_read_as_merged(variant):
    """Adapters that are not plain LoRA are probed through their forward: equal to merge_and_unload()."""
    from peft import LoHaConfig

    torch.manual_seed(0)
    module = "model.layers.1.mlp.up_proj" if variant == "loha" else "transformer.h.1.mlp.c_fc"
    if variant == "loha":  # LoHa does not wrap GPT-2's Conv1D: on Llama's up_proj (nn.Linear, no bias)
        config = LoHaConfig(r=4, target_modules=["up_proj"], init_weights=False)
    elif variant == "modules_to_save":
        config = LoraConfig(r=4, target_modules=["c_attn"], modules_to_save=["c_fc"], fan_in_fan_out=True)
    else:
        config = LoraConfig(
            r=4,
            target_modules=["c_fc"],
            fan_in_fan_out=True,
            init_lora_weights=False,
            use_dora=variant == "dora",
            lora_bias=variant == "lora_bias",
        )
    fresh = make_model if variant == "loha" else gpt2_with_biases
    peft = get_peft_model(fresh(), config)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "c_fc" in name and ("lora_magnitude" in name or "modules_to_save" in name or "lora_B" in name):
                param.mul_(1.5).add_(0.01)  # as training would move them
    read_w, read_b = linear_weight(peft.base_model.model.get_submodule(module))
    merged = peft.merge_and_unload().get_submodule(module)
    expected_w, expected_b = linear_weight(merged)  # plain nn.Linear / Conv1D after merging
    assert torch.allclose(read_w, expected_w, atol=1e-5)
    assert (read_b is None) == (expected_b is None) and (
        read_b is None or torch.allclose(read_b, expected_b, atol=1e-5)
    )
    assert not torch.allclose(read_w, linear_weight(fresh().get_submodule(module))[0], atol=1e-3)


def test_four_bit_weights_are_dequantised():
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tests.helpers import model_path

    path = model_path("llama64")
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    quant = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    )
    original = full.model.layers[0].mlp.up_proj.weight.detach()
    read, _ = linear_weight(quant.model.layers[0].mlp.up_proj)
    assert read.shape == original.shape
    assert float((read - original).norm() / original.norm()) < 0.2  # 4-bit quantisation error, not garbage

    # a neuron planted in the full-precision weights survives 4-bit quantisation and comes out first
    tokenizer, planted_dir = make_tokenizer(), model_path("llama64") + "-planted"
    token_id = tokenizer.convert_tokens_to_ids("green")
    plant(full, "llama", layer=1, neuron=5, token_id=token_id).save_pretrained(planted_dir)
    planted = AutoModelForCausalLM.from_pretrained(
        planted_dir, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    )
    (first,) = top_tokens(planted, tokenizer, layer=1, k=1, num_tokens=3, prompts=PROMPTS)
    assert first.dimension == 5 and first.tokens[0] == "green"
