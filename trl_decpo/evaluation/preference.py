# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Preference pairs under a model: summed completion log-probabilities and DPO's implicit rewards.

The batches are ``trl.DPOTrainer`` 1.16's eval batches, so that the rewards below are those of ``trainer.evaluate()``.
What comes from TRL itself, through its public names:

* prompt extraction when the pairs have no ``prompt`` (``trl.data_utils.extract_prompt``), the text/conversational
  test (``trl.data_utils.is_conversational``) and where the completion starts (``trl.data_utils.common_prefix_length``
  of the tokens of the prompt alone and of the full sequence);
* the collation: ``trl.trainer.dpo_trainer.DataCollatorForPreference`` (``[chosen rows; rejected rows]``, per-sequence
  truncation to ``max_length`` under ``truncation_mode``, right padding, ``completion_mask``).

What is ours, because TRL has it only inside ``DPOTrainer._prepare_dataset`` (a private method that needs a trainer;
its tokenize function is a closure there): the few lines that append EOS to text completions (decided from the first
pair, as TRL does), tokenize ``prompt``, ``prompt + chosen`` and ``prompt + rejected`` whole (``tokenizer(text=...)``,
or ``apply_chat_template`` for message lists, with the generation prompt for the prompt alone, ``tools`` and
``chat_template_kwargs`` passed), and drop, under ``keep_start``, the pairs whose prompt alone fills ``max_length``.
They, and :func:`batch_logps` (TRL computes its log-probabilities inside ``DPOTrainer._compute_loss``), are pinned equal
to ``DPOTrainer``'s prepared eval dataset, ``get_eval_dataloader()`` and ``evaluate()`` by
``tests/evaluation/test_preference.py`` (a word-level test tokenizer) and
``tests/evaluation/test_preference_real_tokenizers.py`` (SmolLM2-135M-Instruct's tokenizer, and a Llama-2-style one
that adds BOS and whose ``[INST]`` chat template writes BOS itself), for text and conversational pairs, with and without
truncation.

    from trl_decpo.evaluation import dpo_pair_rewards, preference_logps

    logps = preference_logps(model, tokenizer, pairs)
    with model.disable_adapter():  # a PEFT adapter: the reference is its base
        ref_logps = preference_logps(model, tokenizer, pairs)
    rewards = dpo_pair_rewards(logps, ref_logps, beta=0.1)
    rewards.accuracy, rewards.margin  # eval_rewards/accuracies, eval_rewards/margins
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..utils import check_choice, check_int


TRUNCATION_MODES = ("keep_start", "keep_end")
NO_TEMPLATE = (
    "conversational {what} (lists of messages) need the tokenizer's chat template, and this tokenizer has none: set "
    "`tokenizer.chat_template` or give text {what}"
)


def _records(pairs) -> list[dict]:
    """Rows of a ``datasets.Dataset``, a dict of columns or a list of dicts, as a list of dicts."""
    if isinstance(pairs, dict):
        columns = list(pairs)
        return [dict(zip(columns, row, strict=True)) for row in zip(*(pairs[c] for c in columns), strict=True)]
    return [dict(row) for row in pairs]


def _template_kwargs(example: dict) -> dict:
    """The ``apply_chat_template`` keyword arguments of a conversational pair, as DPOTrainer builds them."""
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return {"tools": tools, **(example.get("chat_template_kwargs") or {})}


def _token_ids(tokenizer, text_or_messages, **template_kwargs) -> list[int]:
    """Token ids of a text (``tokenizer(text=...)``, special tokens included) or of a list of messages (the chat
    template, tokenized as ``apply_chat_template`` tokenizes it), as DPOTrainer tokenizes them."""
    if isinstance(text_or_messages, str):
        return list(tokenizer(text=text_or_messages)["input_ids"])
    return list(
        tokenizer.apply_chat_template(list(text_or_messages), tokenize=True, return_dict=True, **template_kwargs)[
            "input_ids"
        ]
    )


def tokenize_pairs(tokenizer, pairs) -> list[dict]:
    """``{"prompt_ids", "chosen_ids", "rejected_ids"}`` of each pair, as ``DPOTrainer`` tokenizes its datasets.

    ``pairs``: a ``datasets.Dataset``, a dict of columns or a list of dicts with ``chosen`` / ``rejected`` (and
    ``prompt``, else extracted as TRL does); text or conversational (lists of ``{"role", "content"}`` messages)."""
    from trl.data_utils import common_prefix_length, extract_prompt, is_conversational

    records = _records(pairs)
    if not records:
        raise ValueError("no preference pairs to tokenize")
    if {"chosen", "rejected"} - set(records[0]):
        raise ValueError(
            f"preference pairs need the fields 'prompt', 'chosen' and 'rejected'; the first pair has {sorted(records[0])}"
        )
    if "prompt" not in records[0]:  # DPOTrainer maps `extract_prompt` over the dataset, keeping the other columns
        records = [{**r, **extract_prompt(r)} for r in records]
    conversational = is_conversational(records[0])  # TRL decides from the first pair whether to append EOS
    if conversational and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(NO_TEMPLATE.format(what="pairs"))
    eos = tokenizer.eos_token
    out = []
    for example in records:
        prompt, chosen, rejected = example["prompt"], example["chosen"], example["rejected"]
        if len({isinstance(x, str) for x in (prompt, chosen, rejected)}) > 1:
            raise ValueError(
                "a preference pair's 'prompt', 'chosen' and 'rejected' must all be text or all be lists of messages"
            )
        if is_conversational(example):
            kwargs = _template_kwargs(example)
            prompt_ids = _token_ids(tokenizer, prompt, add_generation_prompt=True, **kwargs)
            chosen_full = _token_ids(tokenizer, list(prompt) + list(chosen), **kwargs)
            rejected_full = _token_ids(tokenizer, list(prompt) + list(rejected), **kwargs)
        else:
            if not conversational:
                chosen = chosen if chosen.endswith(eos) else chosen + eos
                rejected = rejected if rejected.endswith(eos) else rejected + eos
            prompt_ids = _token_ids(tokenizer, prompt)
            chosen_full = _token_ids(tokenizer, prompt + chosen)
            rejected_full = _token_ids(tokenizer, prompt + rejected)
        # the completion starts where the prompt alone and the full sequence diverge (not always after the prompt)
        prompt_len = min(
            common_prefix_length(prompt_ids, chosen_full), common_prefix_length(prompt_ids, rejected_full)
        )
        out.append(
            {
                "prompt_ids": prompt_ids[:prompt_len],
                "chosen_ids": chosen_full[prompt_len:],
                "rejected_ids": rejected_full[prompt_len:],
            }
        )
    return out


def kept_pairs(tokenized: Sequence[dict], max_length: int | None, truncation_mode: str = "keep_start") -> list[int]:
    """Indices of the pairs ``DPOTrainer`` keeps: under ``keep_start`` it drops those whose prompt fills
    ``max_length`` (no completion token would be left)."""
    if max_length is None or truncation_mode != "keep_start":
        return list(range(len(tokenized)))
    return [i for i, t in enumerate(tokenized) if len(t["prompt_ids"]) < max_length]


def collate_pairs(
    tokenized: Sequence[dict], pad_token_id: int, max_length: int | None = None, truncation_mode: str = "keep_start"
) -> dict:
    """One batch from TRL's own ``DataCollatorForPreference``: ``input_ids``, ``attention_mask``, ``completion_mask``,
    the chosen sequences first, then the rejected ones, each truncated to ``max_length``, right-padded."""
    from ..compat import dpo_collator

    check_choice("truncation_mode", truncation_mode, TRUNCATION_MODES)
    collator = dpo_collator(pad_token_id, max_length, truncation_mode)
    batch = collator([{key: list(t[key]) for key in ("prompt_ids", "chosen_ids", "rejected_ids")} for t in tokenized])
    return {key: batch[key] for key in ("input_ids", "attention_mask", "completion_mask")}


def pad_token_id(tokenizer) -> int:
    """The pad id DPOTrainer's collator uses: the tokenizer's pad token, else its EOS token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad preference batches with")
    return pad


def preference_batches(
    tokenizer,
    pairs,
    batch_size: int,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    tokenized: Sequence[dict] | None = None,
) -> Iterator[dict]:
    """The batches of ``DPOTrainer``'s eval dataloader (``per_device_eval_batch_size=batch_size``, in order).

    Each batch also holds ``pair_index`` (the positions of its pairs in ``pairs``) and ``prompt_lengths`` (prompt
    tokens of each chosen row). ``tokenized`` (from :func:`tokenize_pairs`) skips the tokenization."""
    check_int("batch_size", batch_size)
    check_int("max_length", max_length, allow_none=True)
    check_choice("truncation_mode", truncation_mode, TRUNCATION_MODES)
    tokenized = tokenize_pairs(tokenizer, pairs) if tokenized is None else tokenized
    kept = kept_pairs(tokenized, max_length, truncation_mode)
    pad = pad_token_id(tokenizer)
    for start in range(0, len(kept), batch_size):
        index = kept[start : start + batch_size]
        batch = collate_pairs([tokenized[i] for i in index], pad, max_length, truncation_mode)
        batch["pair_index"] = torch.tensor(index, dtype=torch.long)
        batch["prompt_lengths"] = torch.tensor([len(tokenized[i]["prompt_ids"]) for i in index], dtype=torch.long)
        yield batch


def _accepts_logits_to_keep(model) -> bool:
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(target.forward).parameters


def batch_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the completion tokens of a batch from :func:`preference_batches` (one forward
    of ``model``, under the caller's grad mode): ``(chosen [B], rejected [B])`` in float32.

    Logits are computed only from the first completion position on (``logits_to_keep``) when the model allows it, and
    are log-softmaxed in float32 at the completion positions only."""
    device = model.get_input_embeddings().weight.device
    input_ids = batch["input_ids"].to(device)
    completion_mask = batch["completion_mask"].to(device)
    width = input_ids.shape[1]
    kwargs = {"input_ids": input_ids, "attention_mask": batch["attention_mask"].to(device), "use_cache": False}
    has_completion = completion_mask.any(1)
    first = int(completion_mask.float().argmax(1)[has_completion].min()) if bool(has_completion.any()) else width - 1
    keep = width - max(first, 1) + 1  # logits at positions first-1 .. width-1 predict tokens first .. width
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits
    logits = logits[:, -keep:]  # positions width-keep .. width-1 (also drops prompt-learning virtual tokens)
    target = completion_mask[:, width - keep + 1 :].bool()
    labels = input_ids[:, width - keep + 1 :][target]
    token_logps = logits[:, :-1][target].float().log_softmax(-1).gather(1, labels[:, None]).squeeze(1)
    rows = target.nonzero()[:, 0]
    seq = torch.zeros(len(input_ids), dtype=torch.float32, device=device).index_add(0, rows, token_logps)
    half = len(input_ids) // 2
    return seq[:half], seq[half:]


@dataclass
class PairLogps:
    """Summed completion log-probabilities of each kept pair; ``pair_index`` maps them to the input pairs."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    pair_index: torch.Tensor

    def __len__(self) -> int:
        return len(self.chosen)


def preference_logps(
    model,
    tokenizer,
    pairs,
    batch_size: int = 8,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    tokenized: Sequence[dict] | None = None,
) -> PairLogps:
    """Summed log-probabilities of the chosen and rejected completions of every pair under ``model`` (eval mode,
    ``no_grad``), from batches collated as ``DPOTrainer`` collates them. Float64 tensors on the CPU."""
    was_training = model.training
    model.eval()
    chosen, rejected, index = [], [], []
    try:
        with torch.no_grad():
            for batch in preference_batches(tokenizer, pairs, batch_size, max_length, truncation_mode, tokenized):
                c, r = batch_logps(model, batch)
                chosen.append(c.double().cpu())
                rejected.append(r.double().cpu())
                index.append(batch["pair_index"])
    finally:
        model.train(was_training)
    if not index:
        raise ValueError(f"no pair is left: every prompt fills `max_length` ({max_length})")
    return PairLogps(torch.cat(chosen), torch.cat(rejected), torch.cat(index))


@dataclass
class PairRewards:
    """DPO's implicit rewards ``beta * (logp - ref_logp)`` of each pair's chosen and rejected completion."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    beta: float

    @property
    def correct(self) -> torch.Tensor:
        """Per pair, 1.0 when the chosen reward is strictly above the rejected one (as TRL counts), else 0.0."""
        return (self.chosen > self.rejected).double()

    @property
    def margins(self) -> torch.Tensor:
        """Per pair, chosen reward minus rejected reward."""
        return self.chosen - self.rejected

    @property
    def accuracy(self) -> float:
        """``eval_rewards/accuracies`` over all the pairs."""
        return float(self.correct.mean())

    @property
    def margin(self) -> float:
        """``eval_rewards/margins`` over all the pairs."""
        return float(self.margins.mean())


def dpo_pair_rewards(logps: PairLogps, ref_logps: PairLogps, beta: float) -> PairRewards:
    """DPO's implicit rewards of the same pairs under a policy (``logps``) and its reference (``ref_logps``)."""
    if not torch.equal(logps.pair_index, ref_logps.pair_index):
        raise ValueError("the policy's and the reference's log-probabilities are not of the same pairs")
    return PairRewards(beta * (logps.chosen - ref_logps.chosen), beta * (logps.rejected - ref_logps.rejected), beta)


def length_shortcut(tokenized: Sequence[dict], index: Sequence[int] | None = None) -> dict:
    """How well completion length alone predicts the preference: the fractions of pairs whose chosen completion has
    fewer (``chosen_shorter``) or more (``chosen_longer``) tokens than the rejected one, EOS included, as collated."""
    index = range(len(tokenized)) if index is None else [int(i) for i in index]
    lengths = [(len(tokenized[i]["chosen_ids"]), len(tokenized[i]["rejected_ids"])) for i in index]
    if not lengths:
        raise ValueError("no pairs")
    n = len(lengths)
    return {
        "chosen_shorter": sum(c < r for c, r in lengths) / n,
        "chosen_longer": sum(c > r for c, r in lengths) / n,
    }
