"""Shared fixtures: tiny models built from configs and a tokenizer built locally (no Hub access)."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from trl_decpo import DecPOConfig


WORDS = (
    "the a cat dog sat on mat ran fast slow red blue green big small good bad happy sad yes no agree disagree "
    "i you we they think know said is was be not very truly answer question because so and or but"
).split()


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    return tokenizer


VOCAB = len(WORDS) + 3


def tiny_config(arch: str = "llama", layers: int = 4):
    common = dict(vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if arch == "llama64":  # bitsandbytes' CPU 4-bit kernels need widths that are multiples of its block size (64)
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=128, **common)
    if arch == "llama":
        return LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=128, **common)
    if arch == "mistral":
        return MistralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=128, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=128, **common)
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=layers, n_head=4, n_positions=128, n_inner=48, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
                             max_position_embeddings=128, **common)
    raise ValueError(arch)


_SAVED: dict = {}
_ROOT = tempfile.mkdtemp(prefix="trl-decpo-tiny-")


def model_path(arch: str = "llama", layers: int = 4, seed: int = 0) -> str:
    """A tiny random model saved on disk once per session (DPOTrainer reloads its reference model from the path)."""
    key = (arch, layers, seed)
    if key not in _SAVED:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(arch, layers))
        path = os.path.join(_ROOT, f"{arch}-{layers}-{seed}")
        model.save_pretrained(path)
        make_tokenizer().save_pretrained(path)
        _SAVED[key] = path
    return _SAVED[key]


def make_model(arch: str = "llama", layers: int = 4, seed: int = 0):
    return AutoModelForCausalLM.from_pretrained(model_path(arch, layers, seed), dtype=torch.float32)


PAIRS = [
    ("the cat sat on", "the mat", "a dog"),
    ("i think you are", "very good", "bad"),
    ("do you agree", "yes i agree because the answer is good", "no"),
    ("the dog ran", "fast", "slow and sad"),
    ("we know the answer is", "red", "blue green"),
    ("they said", "big", "small"),
    ("is the cat happy", "yes", "no the cat is sad"),
    ("a question", "the answer", "not an answer"),
]


def make_dataset(n: int = 8) -> Dataset:
    rows = [PAIRS[i % len(PAIRS)] for i in range(n)]
    return Dataset.from_dict(
        {"prompt": [r[0] for r in rows], "chosen": [" " + r[1] for r in rows], "rejected": [" " + r[2] for r in rows]}
    )


def base_kwargs(tmp_path) -> dict:
    """TrainingArguments for fast, deterministic CPU runs (no decorrelation fields)."""
    return dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
    )


def decpo_config(tmp_path, **overrides) -> DecPOConfig:
    return DecPOConfig(**{**base_kwargs(tmp_path), "decorrelation_coef": 1.0, **overrides})


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def dataset():
    return make_dataset()


# ----------------------------------------------------------------------------------------------------------------------
# Brute-force references for the monosemanticity proxies (written independently of trl_decpo)
# ----------------------------------------------------------------------------------------------------------------------


def brute_fd(z: torch.Tensor) -> float:
    """1 - mean over ordered pairs i != j of the cosine, with a double loop (cos with a zero row = 0)."""
    x = z.double()
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                ni, nj = float(x[i].norm()), float(x[j].norm())
                total += 0.0 if ni == 0 or nj == 0 else float(x[i] @ x[j]) / (ni * nj)
    return 1.0 - total / (n * (n - 1))


def brute_sparsity(z: torch.Tensor) -> float:
    x = z.double()
    return float(sum(((row - row.mean()) ** 2).mean() for row in x) / len(x))


def last_token_rows(model, token_lists, module) -> torch.Tensor:
    """Each prompt run alone (no padding), the output of `module` at its last token: one row per prompt."""
    rows = []
    seen = {}
    handle = module.register_forward_hook(lambda mod, args, out: seen.__setitem__("z", out))
    try:
        with torch.no_grad():
            for ids in token_lists:
                model(input_ids=torch.tensor([ids]))
                rows.append(seen["z"][0, -1].detach().clone())
    finally:
        handle.remove()
    return torch.stack(rows)


CHAT_TEMPLATE = (  # renders the prompt alone (with the generation prompt) as a prefix of prompt + completion
    "{% for m in messages %}{% if m['role'] == 'user' %}question{% else %}answer{% endif %} {{ m['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}answer {% endif %}"
)
