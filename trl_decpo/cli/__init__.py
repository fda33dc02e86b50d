# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command line (:mod:`.main`): ``train`` (:mod:`.train`), ``measure`` (:mod:`.measure`),
``compare`` (:mod:`.compare`) and ``top-tokens`` (:mod:`.top_tokens`). Application code: the library itself never
imports it."""

from .main import main


__all__ = ["main"]
