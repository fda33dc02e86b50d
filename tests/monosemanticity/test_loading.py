"""Models given as paths (`load_model_and_adapter`, `load_tokenizer`): TRL's ModelConfig options, PEFT adapters on the
base they record or on one given, and the base's tokenizer for an adapter saved without one."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from trl import ModelConfig

from tests.helpers import make_model, make_tokenizer, model_path
from trl_decpo.monosemanticity.loading import load_model_and_adapter, load_tokenizer, name_models, remove_adapter


@pytest.fixture
def adapter_dir(tmp_path):
    get_peft_model(make_model(), LoraConfig(r=2, target_modules=["up_proj"], init_lora_weights=False)).save_pretrained(
        tmp_path / "adapter"
    )
    return str(tmp_path / "adapter")


def test_model_config_options():
    bf16 = load_model_and_adapter(model_path(), model_args=ModelConfig(dtype="bfloat16"), device="cpu")
    assert bf16.dtype == torch.bfloat16 and not bf16.training
    assert load_model_and_adapter(model_path(), device="cpu").dtype == torch.float32  # ModelConfig()'s default
    quant = load_model_and_adapter(model_path("llama64"), model_args=ModelConfig(dtype="auto", load_in_4bit=True))
    assert hasattr(quant.model.layers[0].mlp.up_proj.weight, "quant_state")
    with pytest.raises(ValueError, match="`device` must be 'auto', 'cpu'"):
        load_model_and_adapter(model_path(), device="tpu")


def test_an_adapter_on_the_base_it_records_or_on_one_given(adapter_dir):
    loaded = load_model_and_adapter(adapter_dir, device="cpu")
    assert isinstance(loaded, PeftModel) and loaded.peft_config["default"].r == 2 and not loaded.training
    base = make_model(seed=1)
    on_given = load_model_and_adapter(adapter_dir, base=base, device="cpu")
    assert on_given.get_base_model() is base  # wrapped in place
    with torch.no_grad():
        x = torch.tensor([[1, 2, 3]])
        assert not torch.allclose(on_given(x).logits, loaded(x).logits)  # another base, other numbers
        plain = remove_adapter(on_given)
        assert plain is base and not any("lora" in n for n, _ in plain.named_modules())
        assert torch.allclose(plain(x).logits, make_model(seed=1)(x).logits)


def test_tokenizer_of_the_folder_else_of_the_base(tmp_path, adapter_dir):
    cat = make_tokenizer().convert_tokens_to_ids("cat")
    assert load_tokenizer(adapter_dir).convert_tokens_to_ids("cat") == cat  # the adapter folder has none
    bare = tmp_path / "no-tokenizer"
    make_model().save_pretrained(bare)
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_tokenizer(str(bare))
    assert load_tokenizer(str(bare), base=model_path()).convert_tokens_to_ids("cat") == cat


def test_names_of_the_compared_models(tmp_path):
    model = make_model()
    assert name_models("/a/base", ["/x/dpo", "/y/dpo", model]) == (
        "base",
        {"dpo#1": "/x/dpo", "dpo#2": "/y/dpo", "model_3": model},
    )
    assert name_models(model, {"dpo": "/x/dpo"}, base_name="ref") == ("ref", {"dpo": "/x/dpo"})
    assert name_models(model, {"dpo": "/x/dpo"})[0] == "base"
    with pytest.raises(ValueError, match="both named 'dpo'"):
        name_models(model, {"dpo": "/x/dpo"}, base_name="dpo")
    with pytest.raises(ValueError, match="at least one model"):
        name_models(model, [])
