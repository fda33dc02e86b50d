"""What the tests share: tiny models built by trl_decpo.testing's factory and a tokenizer built locally (no Hub
access), training arguments, brute-force references of the proxies. Imported as `from tests.helpers import ...`.

Importing this module loads torch only: transformers' trainer classes and TRL (through peft, bitsandbytes: several
seconds) are imported by the helpers that need them, so that `pytest tests/penalty` does not wait for them."""

import dataclasses
import functools
import json
import os
import tempfile
import warnings


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch

from trl_decpo.testing import PAIRS, VOCAB_SIZE, WORDS, tiny_config, tiny_model_dir, tiny_preference_dataset
from trl_decpo.testing import tiny_tokenizer as make_tokenizer


__all__ = ["PAIRS", "VOCAB", "WORDS", "checkpointing", "make_tokenizer", "tiny_config"]

VOCAB = VOCAB_SIZE
_SAVED: dict = {}
_ROOT = tempfile.mkdtemp(prefix="trl-decpo-tiny-")


def model_path(arch: str = "llama", layers: int = 4, seed: int = 0) -> str:
    """A tiny random model saved on disk once per session (DPOTrainer reloads its reference model from the path)."""
    key = (arch, layers, seed)
    if key not in _SAVED:
        _SAVED[key] = tiny_model_dir(arch, layers, seed, folder=os.path.join(_ROOT, f"{arch}-{layers}-{seed}"))
    return _SAVED[key]


def make_model(arch: str = "llama", layers: int = 4, seed: int = 0):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path(arch, layers, seed), dtype=torch.float32)


def make_dataset(n: int = 8):
    return tiny_preference_dataset(n)


# `trl-decpo dpo` (sft, kto, reward) options for a fast, deterministic CPU run (later options on the same command line override them)
FAST_TRAIN_ARGS = [
    *("--max_steps", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2"),
    *("--bf16", "false", "--use_cpu", "true", "--report_to", "none", "--logging_steps", "1"),
    *("--max_length", "32", "--dataloader_num_workers", "0"),
]


@functools.cache
def checkpointing_name() -> str:
    """transformers 5 renamed `gradient_checkpointing*` to `activation_checkpointing*` (the old names warn, and go in
    v6): the name this transformers has (also as `CHECKPOINTING`)."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def __getattr__(name):  # `CHECKPOINTING`, computed on first use (importing TrainingArguments is slow)
    if name == "CHECKPOINTING":
        return checkpointing_name()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def checkpointing(enabled: bool, kwargs: dict | None = None) -> dict:
    """Training arguments that turn activation checkpointing on or off, under the names this transformers has."""
    name = checkpointing_name()
    return {name: enabled, **({f"{name}_kwargs": kwargs} if kwargs is not None else {})}


# The warnings a normal run must not print (tests/test_warnings.py); `environmental` ones are none of ours to change.
RUN_WARNINGS = (FutureWarning, DeprecationWarning, UserWarning)


def environmental(warning) -> bool:
    """torch's own torch/utils/mkldnn.py decorates with the `torch.jit.script_method` it deprecates, when it is first
    imported (importing bitsandbytes, through peft, compiles a kernel); Python's default filters hide it outside
    `-W default`, and no code of transformers, TRL, PEFT or ours is involved."""
    return issubclass(warning.category, DeprecationWarning) and "torch.jit.script_method" in str(warning.message)


def warnings_of(call) -> tuple[object, list[str]]:
    """``call()``'s result and the future / deprecation / user warnings it raised, every one of them (``simplefilter
    ("always")``: the suite's own filters and Python's once-per-place rule do not hide any), as readable lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [
        f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, RUN_WARNINGS) and not environmental(w)
    ]


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
        **checkpointing(False),
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
    )


def decpo_config(tmp_path, **overrides):
    """A :class:`~trl_decpo.DecPOConfig` of :func:`base_kwargs`, the penalty on (coefficient 1)."""
    from trl_decpo import DecPOConfig

    return DecPOConfig(**{**base_kwargs(tmp_path), "decorrelation_coef": 1.0, **overrides})


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


def cos(a, b):
    na, nb = float(a.norm()), float(b.norm())
    return 0.0 if na < 1e-9 or nb < 1e-9 else float(a @ b) / (na * nb)


def brute_control(z: torch.Tensor) -> float:
    """1 - mean over ordered pairs i != j of cos^2 of the explicitly centred rows (double loop)."""
    x = z.double()
    centred = [row - x.mean(0) for row in x]
    n = len(x)
    total = sum(cos(centred[i], centred[j]) ** 2 for i in range(n) for j in range(n) if i != j)
    return 1.0 - total / (n * (n - 1))


def brute_participation_ratio(z: torch.Tensor) -> float:
    x = z.double()
    c = x - x.mean(0)
    covariance = c.T @ c / len(x)
    return float(torch.trace(covariance) ** 2 / (covariance**2).sum())


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


# ----------------------------------------------------------------------------------------------------------------------
# Planted neurons (top tokens and the weight proxy)
# ----------------------------------------------------------------------------------------------------------------------


def plant(model, arch, layer, neuron, token_id):
    """Make `neuron` of `layer` the most active one and point its output direction at `token_id`'s unembedding."""
    with torch.no_grad():
        unembed = model.get_output_embeddings().weight
        unembed[token_id] *= 4.0  # the longest unembedding row: its own direction ranks it first
        target = unembed[token_id].clone()
        if arch == "gpt_neox":
            mlp = model.gpt_neox.layers[layer].mlp
            mlp.dense_h_to_4h.weight[neuron] *= 30.0  # Linear: [out, in]
            mlp.dense_4h_to_h.weight[:, neuron] = target * 10
        elif arch == "gpt2":
            mlp = model.transformer.h[layer].mlp
            mlp.c_fc.weight[:, neuron] *= 30.0  # Conv1D: [in, out], neuron = column
            mlp.c_fc.bias[neuron] = 5.0
            mlp.c_proj.weight[neuron] = target * 10  # Conv1D: [in=d_ff, out], output direction = row
        else:
            mlp = model.model.layers[layer].mlp
            mlp.up_proj.weight[neuron] *= 30.0  # Linear: [out, in], neuron = row
            mlp.down_proj.weight[:, neuron] = target * 10  # output direction = column
    return model


def gpt2_with_biases(seed=0):
    model = make_model("gpt2")
    torch.manual_seed(seed)
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.c_fc.bias.normal_(0.1, 0.5)
    return model


def custom_code_model(folder, marker):
    """A model folder whose config names model code shipped in the folder (`auto_map`): remote code."""
    model = make_model()
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    config = json.load(open(os.path.join(folder, "config.json")))
    config.update(
        model_type="decpo_custom_llama",
        architectures=["CustomForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    )
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    with open(os.path.join(folder, "configuration_custom.py"), "w") as f:
        f.write(
            "from transformers import LlamaConfig\n\n\nclass CustomConfig(LlamaConfig):\n"
            "    model_type = 'decpo_custom_llama'\n"
        )
    with open(os.path.join(folder, "modeling_custom.py"), "w") as f:
        f.write(
            f"open({str(marker)!r}, 'a').write('ran\\n')\n"
            "from transformers import LlamaForCausalLM\nfrom .configuration_custom import CustomConfig\n\n\n"
            "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n"
        )


def save_evaluated_models(root) -> None:
    """The models `evaluate` compares, saved under ``root``: ``base`` (with the tokenizer), ``adapter`` (LoRA on the
    MLP, non-zero), ``attn_adapter`` (LoRA on other modules: left-over LoRA layers of ``adapter`` would show) and
    ``full`` (another seed, no tokenizer: BASE's is used for every model)."""
    from peft import LoraConfig, get_peft_model

    make_model().save_pretrained(root / "base")
    make_tokenizer().save_pretrained(root / "base")
    torch.manual_seed(0)
    mlp = LoraConfig(r=4, target_modules=["up_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(make_model(), mlp).save_pretrained(root / "adapter")
    attention = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(make_model(), attention).save_pretrained(root / "attn_adapter")
    make_model(seed=1).save_pretrained(root / "full")


class IdentitySAE:
    """Stands in for a trained SAE (``SAESettings.train`` patched to build one): its features are the neurons
    themselves, and every instance records the tokens it was "trained" on in ``trained``."""

    trained: list = []

    def __init__(self, tokens):
        IdentitySAE.trained.append(tokens)
        self.W_dec = torch.eye(tokens.shape[1])

    def encode(self, x):
        return x


def identity_sae(monkeypatch) -> list:
    """``SAESettings.train`` builds an :class:`IdentitySAE`; returns the list of the tokens each one was trained on."""
    from trl_decpo.independent import SAESettings

    monkeypatch.setattr(IdentitySAE, "trained", [])
    monkeypatch.setattr(SAESettings, "train", lambda self, tokens: IdentitySAE(tokens))
    return IdentitySAE.trained


def research_model_dir(tmp_path, monkeypatch) -> str:
    """A tiny model with a chat template for the research jobs, and their offline scorer replaced by reply length."""
    from research import task
    from transformers import AutoTokenizer

    model_dir = tiny_model_dir(folder=str(tmp_path / "tiny"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    monkeypatch.setattr(task, "score_texts", lambda texts: [len(t) / 100 for t in texts])
    monkeypatch.setattr("research.arms.score_texts", lambda texts: [len(t) / 100 for t in texts])
    return model_dir
