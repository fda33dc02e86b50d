# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Task scorers: a number per completion (toxicity, a classifier's probability, any metric), from a spec string.

A spec is either

* ``module:function``: a Python callable taking a list of strings and returning one float per string (a list or an
  array), e.g. ``profanity_check:predict_prob``; dots after the colon reach attributes (``module:Class.method``);
* a local text-classification model folder: transformers' ``text-classification`` pipeline, the score being the
  probability of one label (``label``; default: a label named ``positive`` if there is one, else the last label).

    from trl_decpo.evaluation import load_scorer

    scorer = load_scorer("profanity_check:predict_prob")
    scorer(["a completion", "another one"])  # [0.02, 0.10]
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..utils import check_int


SCORER_FORMS = "`module:function` (a callable taking a list of strings, returning one float each) or a local text-classification model folder"

_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class Scorer:
    """A scorer loaded from ``spec``: ``scorer(texts)`` returns one float per text; ``description`` says what the
    score is (for the CLI's output)."""

    spec: str
    function: Callable
    description: str
    label: str | None = None

    def __call__(self, texts: Sequence[str]) -> list[float]:
        texts = [str(t) for t in texts]
        if not texts:
            return []
        try:
            raw = self.function(texts)
        except Exception as err:
            raise ValueError(
                f"`--scorer` {self.spec!r} failed on {len(texts)} texts: {type(err).__name__}: {err}"
            ) from err
        try:
            values = [float(v) for v in (raw.tolist() if hasattr(raw, "tolist") else raw)]
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"`--scorer` {self.spec!r} must return one float per text (a list or a 1-d array), got {type(raw).__name__}"
            ) from err
        if len(values) != len(texts):
            raise ValueError(f"`--scorer` {self.spec!r} returned {len(values)} scores for {len(texts)} texts")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"`--scorer` {self.spec!r} returned a non-finite score for text {bad[0]}: {values[bad[0]]}"
            )
        return values


def _load_callable(spec: str) -> Callable:
    module_name, attributes = spec.split(":", 1)
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"`--scorer` {spec!r}: cannot import module {module_name!r} ({err}); give {SCORER_FORMS}"
        ) from err
    for part in attributes.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"`--scorer` {spec!r}: {module_name!r} has no attribute {attributes!r}; give {SCORER_FORMS}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"`--scorer` {spec!r}: {attributes!r} is not callable; give {SCORER_FORMS}")
    return target


def classifier_labels(path: str, trust_remote_code: bool = False) -> list[str]:
    """The labels of a classification model folder, by class id."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"`--scorer` {path!r} is not a model folder ({err}); give {SCORER_FORMS}") from err
    id2label = getattr(config, "id2label", None) or {}
    return [id2label[i] for i in sorted(id2label, key=int)]


def default_label(labels: Sequence[str]) -> tuple[str, str]:
    """The label whose probability is the score when none is chosen, and why."""
    positive = [name for name in labels if str(name).lower() == "positive"]
    if positive:
        return positive[0], "the label named 'positive'"
    return labels[-1], "the last label"


def _load_classifier(path: str, label: str | None, device, batch_size: int, trust_remote_code: bool):
    from transformers import pipeline

    labels = classifier_labels(path, trust_remote_code)
    if not labels:
        raise ValueError(f"`--scorer` {path!r}: the model config names no labels (`id2label`); give {SCORER_FORMS}")
    if label is None:
        label, why = default_label(labels)
        why = f"{why}; choose another with --scorer_label"
    elif label not in labels:
        raise ValueError(f"`--scorer_label` {label!r} is not a label of {path!r}; its labels are {labels}")
    else:
        why = "--scorer_label"
    try:
        classifier = pipeline(
            "text-classification", model=path, tokenizer=path, device=device, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"`--scorer` {path!r} cannot be loaded as a text-classification pipeline: {err}") from err

    def score(texts: list[str]) -> list[float]:
        outputs = classifier(texts, top_k=None, truncation=True, batch_size=batch_size)
        return [next(o["score"] for o in out if o["label"] == label) for out in outputs]

    description = f"probability of label {label!r} of the classifier {path} ({why})"
    return score, description, label


def load_scorer(
    spec: str,
    label: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    trust_remote_code: bool = False,
) -> Scorer:
    """A :class:`Scorer` from ``spec`` (``module:function`` or a local text-classification model folder); ``label``
    picks the classifier label whose probability is the score. Errors name ``--scorer`` / ``--scorer_label``."""
    check_int("batch_size", batch_size)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`--scorer` must be {SCORER_FORMS}, got {spec!r}")
    if os.path.exists(spec):
        if not os.path.isdir(spec):
            raise ValueError(f"`--scorer` {spec!r} is a file; give {SCORER_FORMS}")
        function, description, label = _load_classifier(spec, label, device, batch_size, trust_remote_code)
        return Scorer(spec, function, description, label)
    if _CALLABLE.match(spec):
        if label is not None:
            raise ValueError(
                f"`--scorer_label` applies to a classifier folder, not to the callable `--scorer` {spec!r}; unset it"
            )
        return Scorer(spec, _load_callable(spec), f"{spec} on each completion")
    raise ValueError(
        f"`--scorer` {spec!r} is neither an existing model folder nor `module:function`; give {SCORER_FORMS}"
    )
