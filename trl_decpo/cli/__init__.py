# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The ``trl-decpo`` command line (:mod:`.main`): application code, which the library itself never imports."""

from .main import main


__all__ = ["main"]
