# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""bitsandbytes' notice about its optional CPU 4-bit kernel, held back unless 4-bit is used.

Importing TRL imports peft, which imports bitsandbytes; on CPUs with AVX512-BF16 bitsandbytes then logs "Failed to
load CPU gemm_4bit_forward from kernels-community ... pip install kernels" once, at import, whatever the command. The
command line holds that one record back and lets it out when a model is loaded in 4-bit, where it applies.
"""

from __future__ import annotations

import logging


BITSANDBYTES_LOGGER = "bitsandbytes.backends.cpu.ops"
NOTICE_PREFIX = "Failed to load CPU gemm_4bit_forward"


class _HoldBack(logging.Filter):
    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(NOTICE_PREFIX):
            self.held.append(record)
            return False
        return True


_FILTER = _HoldBack()


def hold_bitsandbytes_notice() -> None:
    """Hold back bitsandbytes' CPU-kernel notice (call before anything imports bitsandbytes)."""
    logging.getLogger(BITSANDBYTES_LOGGER).addFilter(_FILTER)


def release_bitsandbytes_notice() -> None:
    """4-bit is asked for: stop holding the notice back, and emit it if it was held."""
    logger = logging.getLogger(BITSANDBYTES_LOGGER)
    logger.removeFilter(_FILTER)
    held, _FILTER.held = _FILTER.held, []
    for record in held:
        logger.handle(record)
