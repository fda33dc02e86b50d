# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Preference data in the shapes TRL's trainers take: the paper's task formats as pairs (:func:`task_pairs`), a
dataset checked against what a trainer needs (:func:`to_pairs`), pairs mapped to SFT or KTO rows
(:func:`pairs_to_trainer`), the distinct prompts of a split as probes (:func:`probe_prompts`), and datasets read from
a name, file or folder (:func:`load_named`, :func:`load_pairs`). The commands use them; so can a script of one's own."""

from __future__ import annotations

import os

from .mixin.checks import check_preference_columns
from .monosemanticity.probes import first_occurrences
from .utils import DATA_FILE_BUILDERS, load_data_file


DATASET_FORMATS = ("preference", "toxicity", "cognitive_reframing", "sycophancy")
TASK_COLUMNS = {  # the paper's tasks: (prompt, chosen, rejected) columns, tried in order
    "toxicity": [("prompt_text", "unpert_gen_text", "pert_gen_text")],
    "cognitive_reframing": [("situation", "reframe", "thought")],
    "sycophancy": [
        ("question", "answer_not_matching_behavior", "answer_matching_behavior"),
        ("text", "truthful_answer", "sycophantic_answer"),
    ],
}
OWN_FORMATS = {"sft": [{"text"}, {"messages"}, {"prompt", "completion"}], "kto": [{"prompt", "completion", "label"}]}
NEEDS = {  # what each trainer takes, besides preference pairs ('prompt', 'chosen', 'rejected')
    "dpo": "the columns 'prompt', 'chosen' and 'rejected' ('prompt' may be left implicit in both)",
    "sft": "a 'text' column, a 'messages' column, 'prompt' and 'completion' columns, or a preference dataset ('prompt', "
    "'chosen', 'rejected': SFT trains on the chosen completions)",
    "kto": "the columns 'prompt', 'completion' and 'label' (unpaired), or a preference dataset ('prompt', 'chosen', "
    "'rejected': one desirable row with 'chosen' and one undesirable row with 'rejected' per pair)",
    "reward": "the columns 'chosen' and 'rejected', with 'prompt' or the prompt left implicit in both",
}


def column_names(dataset) -> list[str]:
    """The columns of a dataset; an ``IterableDataset`` without known features is peeked at."""
    return list(dataset.column_names or next(iter(dataset), {}))


def to_pairs(dataset, name: str, dataset_format: str = "preference", who: str | None = None):
    """Preference pairs from a paper's task (:func:`task_pairs`), or the dataset as it is: preference pairs, or trainer
    ``name``'s own format (``"dpo"``, ``"sft"``, ``"kto"``, ``"reward"``). Other columns: a ``ValueError`` naming what
    the trainer needs (``who`` names the trainer in it: by default ``the NAME trainer``)."""
    who = who or f"the {name.upper()} trainer"
    if dataset_format != "preference":
        return task_pairs(dataset, dataset_format)
    names = column_names(dataset)
    if name == "sft" and {"label", "completion"} <= set(names):
        raise ValueError(
            f"{who} got unpaired KTO data (columns {names}): SFT would train on the undesirable completions (label "
            "False) too. Keep the rows with label True (and drop the column) for SFT, or train KTO on it "
            "(`trl-decpo kto`, DecorrelatedKTOTrainer)."
        )
    if not {"chosen", "rejected"} <= set(names) and not any(own <= set(names) for own in OWN_FORMATS.get(name, [])):
        raise ValueError(
            f"{who} needs {NEEDS[name]}; the dataset has {names}. Rename the columns, or map the rows "
            f"(`dataset_format` does it for the paper's tasks: {', '.join(DATASET_FORMATS[1:])})."
        )
    return dataset


def task_pairs(dataset, dataset_format: str):
    """The pairs of a paper's task (docs/training.md): completions joined to the prompt as TRL joins them (one space
    unless either side has one), toxic continuations stripped of the prompt they repeat, one pair per answer of a list
    cell; an empty cell is an error naming its row and column."""
    names = column_names(dataset)
    columns = next((c for c in TASK_COLUMNS[dataset_format] if set(c) <= set(names)), None)
    if columns is None:
        wanted = " or ".join(str(list(c)) for c in TASK_COLUMNS[dataset_format])
        raise ValueError(f"`dataset_format={dataset_format!r}` needs the columns {wanted}; the dataset has {names}")

    def cell(value, column, index) -> list[str]:
        values = value if isinstance(value, list) else [value]
        if not values or any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            raise ValueError(f"row {index}: column {column!r} is empty or missing ({value!r})")
        return [str(v) for v in values]

    def join(prompt: str, text: str) -> str:
        return text if not text or text[0].isspace() or not prompt or prompt[-1].isspace() else " " + text

    def convert(batch, indices):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for i, index in enumerate(indices):
            (p,), chosen, rejected = (cell(batch[column][i], column, index) for column in columns)
            for pair in ((c, r) for c in chosen for r in rejected):
                if dataset_format == "toxicity":  # continuations that repeat the prompt: keep what follows it
                    pair = tuple(x[len(p) :] if x.startswith(p) else x for x in pair)
                if dataset_format == "sycophancy":
                    pair = tuple(x.strip() for x in pair)
                for key, value in zip(out, (p, join(p, pair[0]), join(p, pair[1])), strict=True):
                    out[key].append(value)
        return out

    return dataset.map(convert, batched=True, with_indices=True, remove_columns=names)


def pairs_to_trainer(dataset, name: str):
    """Preference pairs as script ``name``'s trainer takes them (DPO, the reward model and a dataset in the trainer's
    own format: unchanged): SFT on ``prompt`` / ``completion`` = ``chosen``; KTO on the pairs unpaired (TRL's
    ``unpair_preference_dataset``). An implicit prompt is extracted first; other columns are dropped."""
    from trl.data_utils import maybe_extract_prompt, unpair_preference_dataset

    names = set(column_names(dataset))
    if name in ("dpo", "reward") or any(own <= names for own in OWN_FORMATS[name]):
        return dataset
    dataset = dataset if "prompt" in names else dataset.map(maybe_extract_prompt)
    dataset = dataset.select_columns(["prompt", "chosen", "rejected"])
    if name == "sft":
        return dataset.remove_columns("rejected").rename_column("chosen", "completion")
    return unpair_preference_dataset(dataset)


def probe_prompts(dataset, max_samples: int | None = None) -> list:
    """The first distinct prompts of a test split, as probes: its ``prompt`` column (an unpaired KTO split holds each
    twice), else ``text``, else each ``messages`` conversation without its last assistant turn."""
    names = column_names(dataset)
    if "prompt" in names or "text" in names:
        prompts = dataset["prompt" if "prompt" in names else "text"]
    elif "messages" in names:
        prompts = [m[:-1] if len(m) > 1 and m[-1].get("role") == "assistant" else m for m in dataset["messages"]]
    else:
        raise ValueError(f"the test split has no 'prompt', 'text' or 'messages' column (it has {names}): set "
                         "`monosemanticity_probes`")  # fmt: skip
    return [prompts[i] for i in first_occurrences(prompts)[:max_samples]]


def load_named(name: str, config: str | None = None, streaming: bool = False):
    """A ``DatasetDict``: a local data file read by the ``datasets`` builder of its suffix (one ``train`` split), or
    what ``datasets.load_dataset`` reads (a Hub id, a folder of data files or one saved with ``save_to_disk``); a name
    that cannot be had is a one-line ``ValueError`` (:mod:`trl_decpo.sources`)."""
    import datasets

    from .sources import load_dataset

    if os.path.isfile(name):
        return datasets.DatasetDict({"train": load_data_file(name, "dataset_name")})
    return load_dataset(name, config, streaming)


def load_pairs(path: str, split: str = "test", dataset_format: str = "preference", max_pairs: int = 0, prefix=""):
    """The first ``max_pairs`` (0: all) preference pairs of split ``split`` of a data file (one split) or a dataset
    folder (saved with ``save_to_disk``, or of data files); ``prefix`` starts the option names in errors (``--``)."""
    import datasets

    suffixes = [suffix for suffix in DATA_FILE_BUILDERS if suffix != ".txt"]
    if not os.path.exists(path):
        raise ValueError(
            f"`{prefix}dataset` {path!r} does not exist; give a {'/'.join(suffixes)} file or a dataset folder"
        )
    if os.path.isfile(path) and os.path.splitext(path)[1].lower() not in suffixes:
        raise ValueError(f"`{prefix}dataset` file {path!r} must end with one of {', '.join(suffixes)}")
    saved = any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json"))
    loaded = datasets.load_from_disk(path) if saved else load_named(path)
    if isinstance(loaded, datasets.Dataset) or (len(loaded) == 1 and split not in loaded and not saved):
        pairs = loaded if isinstance(loaded, datasets.Dataset) else next(iter(loaded.values()))  # one split
    elif split in loaded:
        pairs = loaded[split]
    else:
        raise ValueError(f"`{prefix}split` {split!r} is not a split of {path!r}; its splits are {list(loaded)}")
    if dataset_format == "preference":
        check_preference_columns(pairs, "dataset")
    else:  # the columns of one of the paper's tasks
        pairs = task_pairs(pairs, dataset_format)
    if len(pairs) == 0:
        raise ValueError(f"`{prefix}dataset` {path!r} holds no pairs")
    return pairs.select(range(min(max_pairs or len(pairs), len(pairs))))
