# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The DecPO part of the model card: the paper, the penalty's settings, and sections contributed by callbacks.

The TRL trainer's ``create_model_card`` writes the card (TRL's machinery: tags, citation, training procedure); a
decorrelated trainer appends its settings (naming the trainer), the citation the card lacks (DPO's on a DecPO card,
DecPO's on the others), and the section of every callback that offers one through a ``card_section()`` method
(:class:`~trl_decpo.MonosemanticityCallback` does).
"""

from __future__ import annotations

import os
import textwrap

from ..compat import trainer_callbacks


DECPO_PAPER = {
    "title": "Encourage or Inhibit Monosemanticity? Revisit Monosemanticity from a Feature Decorrelation Perspective",
    "id": "2406.17969",
    # docstyle-ignore
    "citation": textwrap.dedent("""\
        @inproceedings{yan2024encourage,
            title        = {{Encourage or Inhibit Monosemanticity? Revisit Monosemanticity from a Feature Decorrelation Perspective}},
            author       = {Hanqi Yan and Yanzheng Xiang and Guangyi Chen and Yifei Wang and Lin Gui and Yulan He},
            year         = 2024,
            booktitle    = {Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
            url          = {https://arxiv.org/abs/2406.17969},
        }"""),
}


def settings_section(settings: dict, trainer_name: str, heading: str, citation: str | None, cite_as: str) -> str:
    """Markdown: the settings that define the penalty on a ``trainer_name`` (e.g. ``"DPO"``, ``"SFT"``) loss, under
    ``## <heading>``, then ``citation`` (the BibTeX entry TRL's card does not already hold) introduced by
    ``cite_as``."""
    rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in settings.items())
    cite = f"{cite_as}\n\n```bibtex\n{citation}\n```\n" if citation else ""
    return (
        f"\n\n## {heading}\n\n"
        f"The {trainer_name} loss was regularised with the DecPO activation decorrelation penalty "
        f"([{DECPO_PAPER['title']}](https://huggingface.co/papers/{DECPO_PAPER['id']})), "
        "computed by [trl-decpo](https://pypi.org/project/trl-decpo/):\n\n"
        "| setting | value |\n|---|---|\n"
        f"| `trainer` | `{trainer_name}` |\n"
        f"{rows}\n\n"
        f"{cite}"
    )


def callback_sections(trainer) -> str:
    """The card sections of the trainer's callbacks that offer one (``card_section()``)."""
    return "".join(
        callback.card_section() for callback in trainer_callbacks(trainer) if hasattr(callback, "card_section")
    )


def append_to_card(output_dir: str, section: str) -> None:
    """Append ``section`` to the card the TRL trainer's ``create_model_card`` wrote in ``output_dir``."""
    if section:
        with open(os.path.join(output_dir, "README.md"), "a", encoding="utf-8") as handle:
            handle.write(section)
