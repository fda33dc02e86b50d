# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The main job's task: make SmolLM2-135M-Instruct's replies to ToxiGen statements less offensive.

The pairs are on-policy samples of the model itself (research/data/toxigen_onpolicy.jsonl, made by
`python -m research.onpolicy_pairs`): per prompt, the least offensive of its 16 sampled replies is chosen and the most
offensive one rejected, by `alt-profanity-check`'s probability, when the two scores differ by at least `min_gap`.
There is no answer position to exploit (free-text replies); the split is stratified on whether the ToxiGen statement
itself is toxic, and the report prints the chance and length-shortcut baselines beside the accuracy.

    from research.task import load_task, score_texts
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field


PAIRS_FILE = os.path.join(os.path.dirname(__file__), "data", "toxigen_onpolicy.jsonl")


def make_chat(statement: str, system: str | None) -> list[dict]:
    """The chat the replies were sampled from: the pairs' system message (if any), then the statement as user turn."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": statement}]


def render_prompt(tokenizer, statement: str, system: str | None) -> str:
    """The text the model continues: the chat rendered with the generation prompt. Sampling (research/onpolicy_pairs)
    and training use this same text, so the pairs are the model's own replies to the prompt it is trained on."""
    return tokenizer.apply_chat_template(make_chat(statement, system), tokenize=False, add_generation_prompt=True)


def score_texts(texts: list[str]) -> list[float]:
    """alt-profanity-check's probability that each text is offensive (a linear model on word n-grams, offline)."""
    import warnings

    with warnings.catch_warnings():  # the pickled scikit-learn model warns about a version skew it does not suffer
        warnings.simplefilter("ignore")
        from profanity_check import predict_prob

        return [float(p) for p in predict_prob(list(texts))]


@dataclass
class Task:
    train: object  # datasets.Dataset: prompt (chat-rendered text), chosen, rejected
    heldout: object
    heldout_chats: list = field(default_factory=list)  # the held-out prompts as chat messages (probes, generation)
    heldout_gaps: list = field(default_factory=list)  # scorer gap (rejected - chosen) of each held-out pair
    statements: list = field(default_factory=list)  # every ToxiGen statement of the file as a chat (sparse probing)
    statement_labels: list = field(default_factory=list)  # whether each statement is toxic (the probing concept)
    meta: dict = field(default_factory=dict)


def read_records(path: str = PAIRS_FILE) -> tuple[dict, list[dict]]:
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    return lines[0]["meta"], lines[1:]


def make_pair(record: dict, min_gap: float) -> dict | None:
    """(chosen, rejected) = (least, most) offensive reply of the prompt, or None when they differ by less than
    ``min_gap`` or one of them is empty."""
    scores = record["scores"]
    low = min(range(len(scores)), key=scores.__getitem__)
    high = max(range(len(scores)), key=scores.__getitem__)
    chosen, rejected = record["samples"][low], record["samples"][high]
    if scores[high] - scores[low] < min_gap or not chosen.strip() or not rejected.strip():
        return None
    return {"chosen": chosen, "rejected": rejected, "gap": scores[high] - scores[low]}


def truncate_replies(records: list[dict], tokenizer, reply_tokens: int) -> list[dict]:
    """Each sampled reply cut to its first ``reply_tokens`` tokens and scored again: the prefix of an on-policy sample
    is an on-policy sample of a shorter generation, so the pairs stay on-policy and every step gets cheaper."""
    cut = [
        [
            tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:reply_tokens])
            for text in r["samples"]
        ]
        for r in records
    ]
    scores = iter(score_texts([text for texts in cut for text in texts]))
    return [
        {**r, "samples": texts, "scores": [next(scores) for _ in texts]} for r, texts in zip(records, cut, strict=True)
    ]


def load_task(
    tokenizer,
    min_gap: float = 0.15,
    heldout_fraction: float = 0.25,
    split_seed: int = 0,
    reply_tokens: int | None = None,
) -> Task:
    from datasets import Dataset

    meta, records = read_records()
    if reply_tokens:
        records = truncate_replies(records, tokenizer, reply_tokens)
    groups: dict[bool, list[dict]] = {True: [], False: []}
    for record in records:
        pair = make_pair(record, min_gap)
        if pair is not None:
            chat = make_chat(record["prompt"], meta.get("system"))
            prompt = render_prompt(tokenizer, record["prompt"], meta.get("system"))
            groups[record["is_toxic"]].append({**pair, "prompt": prompt, "chat": chat, "is_toxic": record["is_toxic"]})
    train, heldout = [], []
    rng = random.Random(split_seed)
    for key in (True, False):  # stratified: the same share of toxic and benign statements on both sides
        items = groups[key]
        rng.shuffle(items)
        cut = round(heldout_fraction * len(items))
        heldout += items[:cut]
        train += items[cut:]
    rng.shuffle(train)
    columns = ("prompt", "chosen", "rejected")
    return Task(
        train=Dataset.from_list([{k: p[k] for k in columns} for p in train]),
        heldout=Dataset.from_list([{k: p[k] for k in columns} for p in heldout]),
        heldout_chats=[p["chat"] for p in heldout],
        heldout_gaps=[p["gap"] for p in heldout],
        statements=[make_chat(r["prompt"], meta.get("system")) for r in records],
        statement_labels=[bool(r["is_toxic"]) for r in records],
        meta={
            **meta,
            "pairs_file": os.path.relpath(PAIRS_FILE),
            "min_gap": min_gap,
            "reply_tokens": reply_tokens or meta["max_new_tokens"],
            "prompts": len(records),
            "pairs": len(train) + len(heldout),
            "train_pairs": len(train),
            "heldout_pairs": len(heldout),
            "heldout_toxic_statements": sum(p["is_toxic"] for p in heldout),
        },
    )
