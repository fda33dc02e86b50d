"""DecPO as a drop-in for DPOTrainer on every model family it trains: tiny random models built from each family's
transformers config class (`trl_decpo.testing`'s factory), default settings."""

import math

import pytest
import torch

from tests.helpers import decpo_config, make_dataset
from trl_decpo import DecPOTrainer, MonosemanticityCallback, measure_monosemanticity, top_tokens
from trl_decpo.capture import decoder_layers as decoder_layers_of
from trl_decpo.capture import default_sites
from trl_decpo.testing import FAMILIES, LAYER_LISTS, family_decoder_layers, tiny_family_model


PROBES = ["the cat sat on the mat", "a dog ran fast", "i think you agree", "is the answer good", "we know they said"]

UP, ACT = "mlp.up_proj:output", "mlp.act:output"
# The default site of each layer of each family's tiny model, as docs/method.md (section 2) lists them
EXPECTED_SITES = {
    **{f: {UP: [0, 1]} for f in ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "cohere2", "olmo3")},
    **{f: {UP: [0, 1]} for f in ("gemma3_vlm", "qwen2_vl", "qwen2_5_vl", "llava", "idefics3", "smolvlm")},
    **{f: {ACT: [0, 1]} for f in ("gpt2", "gpt_neox", "gptj", "falcon", "starcoder2")},
    "opt": {"fc2:input": [0, 1]},
    "phi3": {"mlp.down_proj:input": [0, 1]},
    "bloom": {"mlp.dense_4h_to_h:input": [0, 1]},
    "mpt": {"ffn.down_proj:input": [0, 1]},
    "recurrent_gemma": {"mlp_block.down_proj:input": [0, 1, 2]},
    "lfm2": {"feed_forward.w2:input": [0, 1, 2, 3]},
    "nemotron_h": {"mixer.shared_experts.down_proj:input": [1], "mixer.down_proj:input": [3]},
    "jamba": {"feed_forward.down_proj:input": [0, 2], "feed_forward:output": [1, 3]},
    **{f: {"mlp:output": [0, 1]} for f in ("mixtral", "qwen3_moe", "olmoe", "gpt_oss")},
    "qwen2_moe": {"mlp.shared_expert.down_proj:input": [0, 1]},
    **{f: {UP: [0], "mlp.shared_experts.down_proj:input": [1, 2, 3]} for f in ("glm4_moe", "deepseek_v3")},
    "dbrx": {"ffn:output": [0, 1]},
}
# Families whose first measured layer is a mixture-of-experts block: top tokens refuses there, saying why
TOP_TOKENS_REFUSED = ["nemotron_h", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "dbrx"]


def test_every_family_is_covered():
    assert sorted(EXPECTED_SITES) == sorted(FAMILIES)


def expected_default_layer(family):
    eligible = sorted(layer for layers in EXPECTED_SITES[family].values() for layer in layers)
    num_layers = len(family_decoder_layers(tiny_family_model(family)[0], family))
    return min(eligible, key=lambda layer: abs(layer - num_layers // 3))


def grads(trainer, batch):
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    return {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def saved_model(family, folder):
    """The family's tiny model saved and loaded again (DPOTrainer loads its reference model from the model's path)."""
    model, tokenizer = tiny_family_model(family)
    model.save_pretrained(folder)
    return type(model).from_pretrained(folder, dtype=torch.float32), tokenizer


@pytest.mark.parametrize("family", FAMILIES)
def test_decpo_trains_every_family_with_default_settings(tmp_path, family):
    model, tokenizer = saved_model(family, tmp_path / "model")
    trainer = DecPOTrainer(
        model=model,
        args=decpo_config(tmp_path, max_steps=2, decorrelation_coef=1.0),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    (site,) = trainer.decorrelation_sites
    assert site.layer == expected_default_layer(family)
    assert site.layer in EXPECTED_SITES[family][str(site.site)]  # the site the docs list for that layer
    eligible = sorted(layer for layers in EXPECTED_SITES[family].values() for layer in layers)
    trainer.add_callback(MonosemanticityCallback(trainer, probes=PROBES, plot=False))
    trainer.train()
    assert trainer.state.global_step == 2
    penalties = [h["decorrelation/penalty"] for h in trainer.state.log_history if "decorrelation/penalty" in h]
    assert len(penalties) == 2 and all(math.isfinite(p) and p > 0 for p in penalties)
    # the callback measured every layer that has a site, before and after training
    history = trainer.callback_handler.callbacks[-1].history
    assert [e["layer"] for e in history[-1]["layers"]] == eligible and len(history) == 2

    # the penalty's gradient reaches the trainable parameters: coefficient 1 against coefficient 0, same batch
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with_penalty = grads(trainer, batch)
    trainer.args.decorrelation_coef = 0.0
    without = grads(trainer, batch)
    assert any(not torch.allclose(with_penalty[n], without[n]) for n in with_penalty)


@pytest.mark.parametrize("family", FAMILIES)
def test_measurement_tools_follow_the_same_rule(family):
    model, tokenizer = tiny_family_model(family)
    assert decoder_layers_of(model)[0] == LAYER_LISTS[family]
    sites = {}
    for layer, site in default_sites(model).items():
        sites.setdefault(str(site), []).append(layer)
    assert sites == EXPECTED_SITES[family]
    report = measure_monosemanticity(model, PROBES, tokenizer)
    assert report.layers == sorted(layer for layers in sites.values() for layer in layers)
    assert all(math.isfinite(report.fd[layer]) for layer in report.layers)
    layer = report.layers[0]
    if family in TOP_TOKENS_REFUSED:
        with pytest.raises(ValueError, match=rf"decoder layers \[.*{layer}.*\] of .* are mixture-of-experts blocks"):
            top_tokens(model, tokenizer, layer, k=2, num_tokens=2, prompts=PROBES)
    else:
        neurons = top_tokens(model, tokenizer, layer, k=2, num_tokens=2, prompts=PROBES)
        assert len(neurons) == 2 and all(len(n.tokens) == 2 for n in neurons)


@pytest.mark.parametrize(
    "family, peft_kwargs",
    [
        ("gpt_oss", {"target_modules": ["q_proj"], "target_parameters": ["mlp.experts.gate_up_proj"]}),
        ("mixtral", {"target_modules": ["q_proj", "v_proj"]}),
        ("qwen2_moe", {"target_modules": ["q_proj", "down_proj"]}),
        ("nemotron_h", {"target_modules": ["up_proj", "down_proj"]}),
    ],
)
def test_default_site_with_peft_on_moe_and_hybrid_stacks(tmp_path, family, peft_kwargs):
    """With a PEFT config (3-D expert weights targeted through `target_parameters` for GPT-OSS), the default site still
    resolves through the adapters and the penalty trains the adapters."""
    from peft import LoraConfig

    model, tokenizer = saved_model(family, tmp_path / "model")
    trainer = DecPOTrainer(
        model=model,
        args=decpo_config(tmp_path, max_steps=2),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, lora_alpha=4, task_type="CAUSAL_LM", **peft_kwargs),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    penalties = [h["decorrelation/penalty"] for h in trainer.state.log_history if "decorrelation/penalty" in h]
    assert len(penalties) == 2 and all(math.isfinite(p) for p in penalties)
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert moved and all("lora_" in n for n in moved)


def test_hybrid_stack_default_layer_and_ineligible_layers(tmp_path):
    """NemotronH: layers 0 (Mamba) and 2 (attention) hold no MLP. The default layer is the eligible one nearest to
    num_layers // 3; asking for an ineligible layer is an error that lists the eligible ones."""
    model, tokenizer = saved_model("nemotron_h", tmp_path / "model")
    assert sorted(default_sites(model)) == [1, 3]
    for layers, message in (([0], r"decoder layer 0 has no MLP site"), ([2], r"layer 2")):
        with pytest.raises(ValueError, match=message) as info:
            DecPOTrainer(
                model=model,
                args=decpo_config(tmp_path, decorrelation_layers=layers),
                train_dataset=make_dataset(),
                processing_class=tokenizer,
            )
        assert "the layers that have one are [1, 3]" in str(info.value)


def test_card_and_settings_name_the_site_of_each_layer(tmp_path, caplog):
    """GLM4-MoE: a dense first layer and MoE layers with shared experts; the settings (model card) name each layer's
    site. Mixtral: the fallback to the MoE block's output is announced."""
    model, tokenizer = saved_model("glm4_moe", tmp_path / "glm")
    trainer = DecPOTrainer(
        model=model,
        args=decpo_config(tmp_path, decorrelation_layers=[0, 1]),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    assert trainer.decorrelation_settings()["decorrelation_site"] == (
        "layer 0: mlp.up_proj:output, layer 1: mlp.shared_experts.down_proj:input"
    )
    model, tokenizer = saved_model("mixtral", tmp_path / "mixtral")
    with caplog.at_level("WARNING"):
        trainer = DecPOTrainer(
            model=model, args=decpo_config(tmp_path), train_dataset=make_dataset(), processing_class=tokenizer
        )
    assert trainer.decorrelation_settings()["decorrelation_site"] == "mlp:output"
    assert "DecPO penalty on decoder layers [0] at mlp:output" in caplog.text
    assert "mixture-of-experts blocks whose routed experts expose no hidden activation" in caplog.text


def test_command_line_measurement_on_hybrid_and_moe_models(tmp_path, capsys):
    """`trl-decpo measure` follows the rule on a hybrid stack (the layers with an MLP); `top-tokens` on fused experts
    says what it cannot do, in one line."""
    from trl_decpo.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROBES))
    for family in ("nemotron_h", "mixtral"):
        model, tokenizer = tiny_family_model(family)
        model.save_pretrained(tmp_path / family)
        tokenizer.save_pretrained(tmp_path / family)
    assert main(["measure", str(tmp_path / "nemotron_h"), "--prompts", str(prompts), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "layer 1: mixer.shared_experts.down_proj:input, layer 3: mixer.down_proj:input" in out
    rows = [line.split()[0] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows == ["1", "3"]
    argv = ["top-tokens", str(tmp_path / "mixtral"), "--layer", "0", "--prompts", str(prompts), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "fused into 3-D parameters" in err and len(err.splitlines()) == 1


def test_default_rule_looks_through_wrapper_modules():
    """A wrapped MLP (activation-checkpointing or FSDP wrappers insert a module between the layer and its MLP): the
    rule finds the same site and hooks the real projection."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    from trl_decpo.capture import resolve_sites

    model, _ = tiny_family_model("phi3")
    for layer in model.model.layers:
        layer.mlp = checkpoint_wrapper(layer.mlp)
    assert {layer: str(site) for layer, site in default_sites(model).items()} == {
        0: "mlp.down_proj:input",
        1: "mlp.down_proj:input",
    }
    (resolved,) = resolve_sites(model, None)
    assert resolved.module is model.model.layers[0].mlp._checkpoint_wrapped_module.down_proj
