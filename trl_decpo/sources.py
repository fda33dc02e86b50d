# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Where models and datasets come from, checked before anything loads: a local path that does not exist, or a Hub id
that cannot be had (offline mode and not in the cache, or the Hub unreachable), is one line saying what to do, instead
of transformers' "Repo id must be in the form ..." or a minute of network retries. The library's loaders
(:func:`~trl_decpo.monosemanticity.load_model_and_adapter`, :func:`~trl_decpo.data.load_named`) and comparisons
(:func:`~trl_decpo.compare_monosemanticity`, :func:`~trl_decpo.evaluate_models`, every model before the first loads)
run these checks; the training commands run them before they launch."""

from __future__ import annotations

import os


OFFLINE_VARIABLES = "HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1"
_PROBES: dict[str, str | None] = {}  # endpoint -> why it cannot be reached (None: reachable), probed once a process


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repository id (``name`` or ``namespace/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "~", os.sep)) or (os.altsep and os.altsep in name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_offline() -> bool:
    """Offline mode, as huggingface_hub reads it from ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """ "the Hub (ENDPOINT) cannot be reached (why)" after one request (no retries; proxies as huggingface_hub uses
    them), or ``None`` when it answers (any HTTP status counts as an answer)."""
    from huggingface_hub import constants, get_session

    endpoint = constants.ENDPOINT
    if endpoint not in _PROBES:
        try:
            get_session().head(endpoint, timeout=timeout)
            _PROBES[endpoint] = None
        except Exception as err:  # DNS, refused, timeout, proxy, TLS: the libraries would retry it for a minute
            reason = (str(err).strip().splitlines() or [""])[0][:160]
            why = f"{type(err).__name__}{': ' + reason if reason else ''}"
            _PROBES[endpoint] = f"the Hub ({endpoint}) cannot be reached ({why})"
    return _PROBES[endpoint]


def in_hub_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether the model ``repo_id`` has a config (model or adapter) in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str)
        for name in ("config.json", "adapter_config.json")
    )


def check_model_source(name: str, option: str, revision: str | None = None) -> None:
    """Raise a one-line ``ValueError`` when model ``name`` (given as ``option``) cannot load: a local path that does not
    exist, or a Hub id that is not in the cache while offline, or whose Hub cannot be reached."""
    if os.path.exists(os.path.expanduser(name)):
        return
    if not is_hub_id(name):
        raise ValueError(f"{option} {name!r} does not exist: no such folder (from {os.getcwd()})")
    cached = in_hub_cache(name, revision)
    if hub_offline():
        if cached:
            return
        raise ValueError(
            f"{option} {name!r} does not exist as a local folder, and as a Hub id it is not in the Hugging Face cache "
            f"while offline mode is on ({OFFLINE_VARIABLES}): give a local model folder, or download it first with "
            "the Hub reachable and those variables unset"
        )
    problem = hub_unreachable()
    if problem is not None:
        todo = (
            "it is in the cache: set HF_HUB_OFFLINE=1 to load it from there without network retries"
            if cached
            else "it is not in the cache either: give a local model folder, or download it where the Hub is reachable "
            "(and set HF_HUB_OFFLINE=1 to work offline afterwards)"
        )
        raise ValueError(f"{option} {name!r} does not exist as a local folder, and {problem}; {todo}")


def check_models(models, revision: str | None = None) -> None:
    """:func:`check_model_source` for each of ``models`` given as a path or Hub id (loaded models pass)."""
    for model in models:
        if isinstance(model, (str, os.PathLike)):
            check_model_source(os.fspath(model), "model", revision)


def check_dataset_source(name: str, option: str) -> None:
    """As :func:`check_model_source` for a dataset: a local path (or a name with a data file's suffix) that does not
    exist, or a Hub id with the Hub unreachable (offline, ``datasets`` itself reads its cache at once)."""
    from .utils import DATA_FILE_BUILDERS

    if os.path.exists(os.path.expanduser(name)):
        return
    if not is_hub_id(name) or os.path.splitext(name)[1].lower() in DATA_FILE_BUILDERS:
        raise ValueError(f"{option} {name!r} looks like a local path but does not exist (from {os.getcwd()})")
    problem = None if hub_offline() else hub_unreachable()
    if problem is not None:
        raise ValueError(
            f"{option} {name!r} does not exist as a local file or folder, and {problem}: give a local data file, or "
            "set HF_HUB_OFFLINE=1 to use a copy in the datasets cache"
        )


def load_dataset(name: str, config: str | None = None, streaming: bool = False):
    """``datasets.load_dataset(name)`` after :func:`check_dataset_source`, with a Hub dataset missing from the cache in
    offline mode said in one line (``datasets`` raises a ``ConnectionError``)."""
    import datasets

    check_dataset_source(name, "`dataset_name`")
    try:
        return datasets.load_dataset(name, name=config, streaming=streaming)
    except ConnectionError as err:
        if not hub_offline():
            raise
        raise ValueError(
            f"`dataset_name` {name!r} does not exist as a local file or folder, and as a Hub dataset it is not in the "
            f"cache while offline mode is on ({OFFLINE_VARIABLES}): give a local data file or folder, or download it "
            f"first with the Hub reachable and those variables unset ({err})"
        ) from err
