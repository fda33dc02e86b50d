# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command line (:mod:`.main`): the training commands ``dpo``, ``sft``, ``kto`` and ``reward``
(scripts of :mod:`trl_decpo.cli.scripts`, launched through accelerate), and the measuring commands ``measure``,
``compare``, ``top-tokens`` and ``evaluate``. Application code: the library itself never imports it."""

from .main import main


__all__ = ["main"]
