# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Probe prompts: loading them, tokenizing them as ``trl.DPOTrainer`` tokenizes a prompt, choosing where each one is
pooled, and batching them.

Probes are tokenized like DPOTrainer's ``prompt_ids`` (chat template with the generation prompt for conversational
prompts, the tokenizer's own special tokens for text) and right-padded: a real token of a right-padded row sees
exactly what it would see alone. :func:`prepare_probes` also decides which tokens make each probe's row (``pooling``):
the last token, the mean over all tokens, or the last token of the last message's content, before the chat template's
constant generation suffix (``<|im_end|>\\n<|im_start|>assistant\\n``, ...).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import logging

from ..capture import unwrap_model
from ..utils import check_choice, load_data_file


logger = logging.get_logger(__name__)

PROBE_POOLING_CHOICES = ("auto", "last", "last_content", "mean")
# Stands for the last message's content when the chat template is rendered to find what follows the content.
_SENTINEL = "TrlDecpoContentEndSentinel"


def _column(records: Sequence, column: str, source: str) -> list:
    if all(isinstance(r, (str, list)) for r in records):
        return list(records)
    if all(isinstance(r, dict) for r in records):
        missing = [i for i, r in enumerate(records) if column not in r]
        if missing:
            keys = sorted(records[missing[0]])
            raise ValueError(
                f"{source}: record {missing[0]} has no {column!r} field; its fields are {keys} "
                "(choose one with `prompt_column`)"
            )
        return [r[column] for r in records]
    raise ValueError(f"{source}: expected a list of strings or of objects with a {column!r} field")


def load_prompts(source: str, column: str = "prompt", split: str = "train", max_samples: int | None = None) -> list:
    """Prompts from a file, a dataset saved with ``save_to_disk``, or a Hub dataset id.

    Files: ``.txt`` (one prompt per non-empty line), ``.json`` (a list of strings or of objects), ``.jsonl`` (one string
    or object per line), ``.csv`` / ``.parquet`` / ``.arrow``. Objects and tables give their ``column`` field; a prompt
    may be a string or a list of chat messages.
    """
    import datasets

    if not isinstance(source, str) or not source:
        raise ValueError(f"`prompts` must be a file, a dataset folder or a dataset id, got {source!r}")
    suffix = os.path.splitext(source)[1].lower()
    if os.path.isfile(source):
        if suffix == ".txt":
            prompts = [line for line in load_data_file(source, "prompts")["text"] if line.strip()]
        elif suffix in (".json", ".jsonl"):
            # Read here, not by `datasets`' json builder: it reads a list of strings and a list of objects that have
            # only a "text" field alike, and cannot read JSON lines of bare strings.
            with open(source, encoding="utf-8") as f:
                if suffix == ".jsonl":
                    data = [json.loads(line) for line in f if line.strip()]
                else:
                    data = json.load(f)
            if isinstance(data, dict):
                data = data.get(column, data.get("data"))
            if not isinstance(data, list):
                raise ValueError(f"{source}: expected a JSON list (or an object with a {column!r} list)")
            prompts = _column(data, column, source)
        else:  # tables, or an error naming the suffixes allowed
            prompts = prompts_from_dataset(load_data_file(source, "prompts"), column, source)
    elif os.path.isdir(source):
        try:
            loaded = datasets.load_from_disk(source)
        except FileNotFoundError as err:
            raise ValueError(f"`prompts` folder {source!r} is not a dataset saved with `save_to_disk`") from err
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"`prompts` dataset {source!r} has no split {split!r}; splits: {list(loaded)}")
            loaded = loaded[split]
        prompts = prompts_from_dataset(loaded, column, source)
    else:
        try:
            loaded = datasets.load_dataset(source, split=split)
        except Exception as err:  # offline, missing, private: say what was tried
            raise ValueError(
                f"`prompts` {source!r} is neither an existing file or folder nor a loadable dataset id "
                f"(split {split!r}): {err}"
            ) from err
        prompts = prompts_from_dataset(loaded, column, source)
    if max_samples is not None:
        prompts = prompts[:max_samples]
    if not prompts:
        raise ValueError(f"`prompts` {source!r} holds no prompts")
    return prompts


def load_labels(source: str, column: str, max_samples: int | None = None, split: str = "train") -> list:
    """One label per prompt of ``source`` (as :func:`load_prompts` reads it, in the same order): its ``column``
    field, from a ``.json`` / ``.jsonl`` / ``.csv`` / ``.parquet`` / ``.arrow`` file or a dataset (folder or Hub id)."""
    import datasets

    suffix = os.path.splitext(source)[1].lower()
    if suffix == ".txt":
        raise ValueError(
            f"`labels` names a field of the probes, and a .txt file of prompts ({source!r}) has none: give a .json, "
            ".jsonl, .csv or .parquet file or a dataset"
        )
    if os.path.isfile(source) and suffix in (".json", ".jsonl"):
        with open(source, encoding="utf-8") as f:
            data = [json.loads(line) for line in f if line.strip()] if suffix == ".jsonl" else json.load(f)
        data = data.get("data") if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(r, dict) and column in r for r in data):
            raise ValueError(f"`labels` {column!r} is not a field of every record of {source!r}")
        values = [r[column] for r in data]
    else:
        if os.path.isfile(source):
            table = load_data_file(source, "labels")
        else:
            table = (
                datasets.load_from_disk(source)
                if os.path.isdir(source)
                else datasets.load_dataset(source, split=split)
            )
        table = table[split] if isinstance(table, datasets.DatasetDict) else table
        if column not in table.column_names:
            raise ValueError(
                f"`labels` {column!r} is not a column of {source!r}; its columns are {table.column_names}"
            )
        values = list(table[column])
    return values[:max_samples] if max_samples else values


def first_occurrences(prompts: Sequence) -> list[int]:
    """Indices of the first occurrence of each distinct prompt (a string, chat messages or token ids), in order: the
    rows of a dataset that repeats its prompts (an unpaired KTO dataset, several pairs per prompt) give each probe
    once, since a probe paired with its own copy would count as perfectly correlated."""
    seen, keep = set(), []
    for index, prompt in enumerate(prompts):
        key = json.dumps(prompt, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            keep.append(index)
    return keep


def prompts_from_dataset(dataset, column: str = "prompt", source: str = "dataset") -> list:
    """The probe prompts of a dataset: its ``prompt_ids`` (already tokenized, as TRL leaves them) or ``column``."""
    names = list(dataset.column_names)
    if "prompt_ids" in names:
        return [list(ids) for ids in dataset["prompt_ids"]]
    if column not in names:
        raise ValueError(
            f"{source} has no {column!r} column; its columns are {names} (choose one with `prompt_column`)"
        )
    return list(dataset[column])


def _text_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerBase

    if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor (VLM): its text tokenizer
    return tokenizer


def tokenize_prompts(prompts: Sequence, tokenizer=None, max_length: int | None = None) -> list[list[int]]:
    """Token ids of each prompt, as ``trl.DPOTrainer`` tokenizes prompts; the last ``max_length`` tokens are kept.

    A prompt may be a string, a list of chat messages (``{"role", "content"}`` dicts), or already a list of token ids.
    """
    from trl.data_utils import is_conversational

    tokenizer = _text_tokenizer(tokenizer)
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, (list, tuple)) and prompt and set(map(type, prompt)) <= {int}:
            ids = list(prompt)
        elif isinstance(prompt, str) or is_conversational({"prompt": prompt}):
            if tokenizer is None:
                raise ValueError("text prompts need a tokenizer (`processing_class`)")
            if isinstance(prompt, str):
                ids = tokenizer(text=prompt)["input_ids"]
                # A tokenizer that appends EOS would make every probe end on the same token. DPOTrainer's prompt_ids
                # drop it too (they keep the prefix shared with prompt + completion).
                eos = getattr(tokenizer, "eos_token_id", None)
                if len(ids) > 1 and eos is not None and ids[-1] == eos and not prompt.endswith(tokenizer.eos_token):
                    ids = ids[:-1]
            else:
                ids = tokenizer.apply_chat_template(
                    list(prompt), tokenize=True, return_dict=True, add_generation_prompt=True
                )["input_ids"]
        else:
            raise ValueError(f"prompt {i} is not a string, a list of chat messages or a list of token ids: {prompt!r}")
        if len(ids) == 0:
            raise ValueError(f"prompt {i} tokenizes to no tokens: {prompt!r}")
        if max_length is not None:
            ids = ids[-max_length:]
        out.append(list(ids))
    return out


@dataclass
class ProbeSet:
    """Tokenized probes and which of their tokens make each probe's row (:func:`prepare_probes`)."""

    token_ids: list[list[int]]
    pooling: str  # "last", "last_content" or "mean" ("auto" resolved)
    trailing: list[int]  # per probe: tokens after the pooled one (the generation suffix for "last_content"; else 0)

    def __len__(self) -> int:
        return len(self.token_ids)

    def keep_last(self, limit: int) -> ProbeSet:
        """The probes cut to their last ``limit`` tokens (the pooled token must remain)."""
        cut = [i for i, n in enumerate(self.trailing) if n >= limit]
        if cut:
            raise ValueError(
                f"`pooling={self.pooling!r}`: probe {cut[0]} keeps only its last {limit} tokens, all of them in the "
                f"chat template's generation suffix ({self.trailing[cut[0]]} tokens); raise `max_length`"
            )
        return ProbeSet([ids[-limit:] for ids in self.token_ids], self.pooling, list(self.trailing))


def generation_suffix(tokenizer, messages: Sequence[dict] | None = None) -> list[int]:
    """The tokens the chat template puts after the content of the last message of ``messages`` (default: one user
    message) when it adds the generation prompt, e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``.

    Found by rendering the same messages with a sentinel string as the last content and tokenizing what follows it
    (as ``apply_chat_template`` tokenizes: no special tokens added)."""
    tokenizer = _text_tokenizer(tokenizer)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("`pooling='last_content'` on chat probes needs a tokenizer with a chat template")
    messages = list(messages) if messages else [{"role": "user", "content": ""}]
    last = dict(messages[-1])
    last["content"] = [{"type": "text", "text": _SENTINEL}] if isinstance(last.get("content"), list) else _SENTINEL
    text = tokenizer.apply_chat_template([*messages[:-1], last], tokenize=False, add_generation_prompt=True)
    if _SENTINEL not in text:
        raise ValueError(
            "`pooling='last_content'`: the chat template does not render the last message's content verbatim, so the "
            "end of the content cannot be located; use `pooling='last'` or `'mean'`"
        )
    suffix = text[text.rindex(_SENTINEL) + len(_SENTINEL) :]
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"]) if suffix else []


def _trailing_tokens(i: int, ids: list[int], suffix: list[int], tokenizer) -> int:
    """How many tokens of probe ``i`` follow its content: its generation ``suffix``, checked against its ids."""
    if len(ids) <= len(suffix) or (suffix and ids[-len(suffix) :] != suffix):
        shown = _text_tokenizer(tokenizer).decode(suffix)
        raise ValueError(
            f"`pooling='last_content'`: probe {i} does not end with the chat template's generation suffix {shown!r} "
            f"({len(suffix)} tokens) after at least one content token; use `pooling` 'last' or 'mean' for such probes"
        )
    return len(suffix)


def prepare_probes(
    prompts: Sequence,
    tokenizer=None,
    max_length: int | None = None,
    pooling: str = "auto",
    chats: Sequence | None = None,
) -> ProbeSet:
    """Tokenize ``prompts`` (:func:`tokenize_prompts`) and choose which tokens make each probe's row.

    ``pooling``, one of :data:`PROBE_POOLING_CHOICES`:

    * ``"last"``: the last token of the prompt (for chat probes, the last token of the generation prompt, the same
      token for every probe);
    * ``"mean"``: the mean over all the prompt's tokens (chat template tokens included);
    * ``"last_content"``: the last token of the last message's content, before the chat template's generation suffix
      (:func:`generation_suffix`, checked against each probe's ids: a probe that does not end with it is an error).
      A plain-text probe is all content: its last token. Token-id probes are taken as chat-templated single-turn
      prompts (a user message's suffix), unless ``chats`` gives the messages each was templated from;
    * ``"auto"`` (default): ``"last_content"`` when some probe is a list of chat messages (or was templated from one,
      per ``chats``), else ``"last"`` (plain text and bare token ids: today's behaviour); if a probe fails the suffix
      check, ``"last"`` for all probes, with a warning.

    ``chats``: for token-id probes, the chat messages each one was templated from (``None`` entries for text), e.g. a
    DPO dataset's ``prompt`` column beside its ``prompt_ids``.
    """
    from trl.data_utils import is_conversational

    check_choice("pooling", pooling, PROBE_POOLING_CHOICES)
    token_lists = tokenize_prompts(prompts, tokenizer, max_length)
    zeros = [0] * len(token_lists)
    if pooling in ("last", "mean"):
        return ProbeSet(token_lists, pooling, zeros)
    if chats is not None and len(chats) != len(token_lists):
        raise ValueError(f"`chats` holds {len(chats)} entries for {len(token_lists)} prompts")
    sources = list(chats) if chats is not None else list(prompts)
    conversations = [c if c is not None and is_conversational({"prompt": c}) else None for c in sources]
    if pooling == "auto" and all(c is None for c in conversations):
        return ProbeSet(token_lists, "last", zeros)
    user_suffix: list[list[int]] = []

    def trailing(i, prompt, chat, ids) -> int:
        if chat is not None:
            return _trailing_tokens(i, ids, generation_suffix(tokenizer, chat), tokenizer)
        if isinstance(prompt, str) or chats is not None:  # plain text: all of it is content
            return 0
        if not user_suffix:  # token ids without their messages: a single user message's suffix, found once
            user_suffix.append(generation_suffix(tokenizer))
        return _trailing_tokens(i, ids, user_suffix[0], tokenizer)

    try:
        counts = [
            trailing(i, prompt, chat, ids)
            for i, (prompt, chat, ids) in enumerate(zip(prompts, conversations, token_lists, strict=True))
        ]
    except ValueError as err:
        if pooling == "last_content":
            raise
        logger.warning(f"{err}. `pooling='auto'` pools every probe at its last token instead.")
        return ProbeSet(token_lists, "last", zeros)
    return ProbeSet(token_lists, "last_content", counts)


def right_padded_batches(token_lists: list[list[int]], batch_size: int, pad_id: int, device, last_index: bool = False):
    """Right-padded batches, grouped by length (sorted) to waste little compute on padding.

    Yields ``(input_ids, attention_mask, index)``, ``index`` holding each row's position in ``token_lists``; with
    ``last_index=True`` also the flat index of each row's last token in ``input_ids.reshape(-1)`` (the rows that
    ``build_row_index("last", ...)`` would pick, known here without any mask arithmetic).
    """
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        chunk = [token_lists[i] for i in picked]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        batch = (input_ids.to(device), attention_mask.to(device), torch.tensor(picked, device=device))
        if last_index:
            last = [row * width + len(ids) - 1 for row, ids in enumerate(chunk)]
            batch += (torch.tensor(last, device=device),)
        yield batch


def input_device(model: nn.Module) -> torch.device:
    embeddings = unwrap_model(model).get_input_embeddings()
    return embeddings.weight.device


def forward_kwargs(model: nn.Module) -> dict:
    """Extra forward arguments that skip work the measurement does not need (the logits of all but one position)."""
    target = unwrap_model(model)
    target = target.get_base_model() if hasattr(target, "get_base_model") else target
    if "logits_to_keep" in inspect.signature(target.forward).parameters:
        return {"logits_to_keep": 1}
    return {}


def model_max_positions(model: nn.Module) -> int | None:
    """The longest input the model's position embeddings allow (``max_position_embeddings`` / ``n_positions``)."""
    config = getattr(unwrap_model(model), "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_pad_id(tokenizer, pad_id):
    if pad_id is not None:
        return pad_id
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if value is not None:
            return value
    return 0  # right padding: pad positions come after the last real token and never reach it
